# SPDX-License-Identifier: BSD-3-Clause
# mpi_compare.py: the MPI backend beside mpi4py.futures and raw MPI (issue 13); updates docs/benchmarks.md.
#
#   python3 bench/mpi_compare.py --build build/default [--rounds 3] [--ranks | --ranks-only]
#       [--ranks-n 2,4,8,16] [--no-pacing] [--pacing-values 0,50,200,500,2000] [--quick] [--no-write]
#       [--output docs/benchmarks.md]
#
# Speed (item 1), in each setting where it can run, several rounds, medians:
#   job of N, shared memory  OMPI_MCA_btl=self,vader
#       ferry:   mpirun -n 1 ferry-mpi-bench : -n 2 ferry-mpi-worker
#       mpi4py:  mpirun -n 3 python3 -m mpi4py.futures bench/mpi/mpi4py_bench.py
#   job of N, TCP            OMPI_MCA_btl=self,tcp (loopback), the same two commands
#   spawn, TCP               OMPI_MCA_btl=self,tcp
#       ferry:   mpirun -n 1 ferry-mpi-bench          (2 agents started with MPI_Comm_spawn)
#       mpi4py:  mpirun -n 1 python3 bench/mpi/mpi4py_bench.py   (MPIPoolExecutor(max_workers=2))
#   raw MPI:     mpirun -n 2 ferry-mpi-pingpong, under each transport
# Spawn over shared memory is not run: Open MPI 4.1's vader connects only processes of one job,
# and MPI_Comm_spawn starts a new job (with btl self,vader its agents fail in MPI_Init with
# "Unreachable"; with self,vader,tcp the host and its agents talk TCP anyway).
#
# Pacing (item 1, with the speed part unless --no-pacing): the job of N over shared memory with
# FERRY_MPI_SPIN_US set to each of --pacing-values, the same rounds; and what a rank waiting in a
# blocking MPI_Recv burns (ferry-mpi-pingpong --blocking-idle 2, mpi_yield_when_idle 0 and 1).
#
# Many ranks (item 2, --ranks): for N in --ranks-n, `mpirun --oversubscribe -n 1 ferry-mpi-bench
# --ranks : -n N ferry-mpi-worker` (20,000 tasks over all N agents), then the same job shape with
# --dead-rank and FERRY_MPI_TIMEOUT_MS=1000.
#
# Every mpirun runs in a session of its own and is killed with its whole process tree when it
# overruns --timeout. Environment of every run (as tests/test_mpi.cpp's): OMPI_ALLOW_RUN_AS_ROOT,
# OMPI_MCA_rmaps_base_oversubscribe=1, loopback for TCP and out-of-band, orte_enable_recovery,
# FERRY_WORKER and FERRY_MPI_WORKER from --build. Needs only the standard library; mpi4py_bench.py
# runs under --python (Debian's python3-mpi4py). Writes the section "The MPI backend beside
# mpi4py.futures (issue 13)" of the --output file in place, leaving the rest of the file as it is;
# a part not measured in this invocation (speed, or many ranks) keeps its earlier text.
import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SYSTEM_PYTHON = "/usr/bin/python3"

SECTION = "## The MPI backend beside mpi4py.futures (issue 13)"
SPEED_HEADING = "### Speed beside mpi4py.futures and raw MPI (item 1)"
PACING_HEADING = "### Pacing: spin, nap, or wait inside MPI (item 1)"
RANKS_HEADING = "### Many ranks (item 2)"

TRANSPORTS = {"shm": ("shared memory", "self,vader"), "tcp": ("TCP over loopback", "self,tcp")}
# (mode, transport) settings of the speed comparison, in the order they are run and shown.
SETTINGS = [("job", "shm"), ("job", "tcp"), ("spawn", "tcp")]
MODE_NAMES = {"job": "job of N", "spawn": "spawn"}

TIME, RATE = "time", "rate"
# label, unit, metric, kind
SPEED_ROWS = [
    ("round trip, median", "µs", "roundtrip_us_median", TIME),
    ("round trip, p90", "µs", "roundtrip_us_p90", TIME),
    ("submit one by one, then get all", "tasks/s", "submit_tasks_per_s", RATE),
    ("map, chunksize 1000", "tasks/s", "map_chunk1000_tasks_per_s", RATE),
    ("idle: host process (hub thread included)", "% of a core", "idle_host_cpu_percent", TIME),
    ("idle: busiest agent (mpi4py: worker)", "% of a core", "idle_agent_cpu_percent_max", TIME),
]
IDLE_LIMIT = 2.0  # "% of a core"


# ---- running --------------------------------------------------------------------------------------

def descendants(pid):
    """Pids of every process below pid (this machine's /proc), deepest last."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, pending = [], [pid]
    while pending:
        for c in children.get(pending.pop(), []):
            out.append(c)
            pending.append(c)
    return out


def kill_tree(proc):
    """SIGKILL the run's session (its process group) and anything below it that left the group."""
    below = descendants(proc.pid)
    for target in [proc.pid, *below]:
        try:
            os.killpg(target, signal.SIGKILL) if target == proc.pid else os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_json_lines(cmd, env, timeout, label):
    """Runs cmd in a new session; returns ({metric: record}, error or None, seconds)."""
    print(f"# {label}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    records, error = {}, None
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=REPO_DIR, start_new_session=True)
    except OSError as e:
        return {}, f"{label}: could not start {cmd[0]}: {e}", 0.0
    try:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            error = f"{label}: exited with status {proc.returncode}"
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        error = f"{label}: did not finish within {timeout:g} s (its process tree was killed)"
    finally:
        # Whatever the job left behind (an agent that outlived mpirun) goes too.
        kill_tree(proc)
    seconds = time.monotonic() - t0
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
            records[rec["metric"]] = rec
        except (ValueError, KeyError, TypeError):
            print(f"# {label}: not a metric line: {line}", file=sys.stderr)
    nulls = [f"{label}: {k}: {r.get('note', '')}" for k, r in records.items() if r.get("value") is None]
    if error and not records:
        tail = " | ".join(l for l in err.strip().splitlines()[-4:] if l.strip())
        error += f"; no metric printed; stderr ends: {tail or '(nothing)'}"
    problems = ([error] if error else []) + nulls
    for p in problems:
        print(f"# {p}", file=sys.stderr, flush=True)
    return records, "; ".join(problems) or None, seconds


class Runner:
    def __init__(self, args):
        build = Path(args.build).resolve()
        self.bin = build / "bin"
        self.bench = self.bin / "ferry-mpi-bench"
        self.agent = self.bin / "ferry-mpi-worker"
        self.pingpong = self.bin / "ferry-mpi-pingpong"
        self.worker = self.bin / "ferry-worker"
        missing = [p for p in (self.bench, self.agent, self.pingpong, self.worker) if not p.is_file()]
        if missing:
            sys.exit("mpi_compare.py: not built: " + ", ".join(map(str, missing)) + "\n  build them with: "
                     f"cmake --preset default -DFERRY_BUILD_BENCH=ON && cmake --build --preset default "
                     "--target ferry_mpi_bench ferry_mpi_pingpong")
        self.mpirun = args.mpirun
        self.python = args.python
        self.timeout = args.timeout
        self.errors = []

    def env(self, btl, extra=None):
        e = dict(os.environ)
        e.update({
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_rmaps_base_oversubscribe": "1",
            "OMPI_MCA_btl_tcp_if_include": "lo", "OMPI_MCA_oob_tcp_if_include": "lo",
            "OMPI_MCA_orte_enable_recovery": "1",
            "OMPI_MCA_btl": btl,
            "FERRY_WORKER": str(self.worker), "FERRY_MPI_WORKER": str(self.agent),
        })
        e.update(extra or {})
        return e

    def run(self, cmd, btl, label, extra=None):
        recs, error, _ = run_json_lines(cmd, self.env(btl, extra), self.timeout, label)
        if error:
            self.errors.append(error)
        return recs

    def ferry(self, mode, btl, bench_args):
        cmd = [self.mpirun, "-n", "1", str(self.bench), *bench_args]
        if mode == "job":
            cmd += [":", "-n", "2", str(self.agent)]
        return self.run(cmd, btl, f"ferry, {mode}, btl {btl}")

    def mpi4py(self, mode, btl, bench_args):
        script = str(BENCH_DIR / "mpi" / "mpi4py_bench.py")
        if mode == "job":
            cmd = [self.mpirun, "-n", "3", self.python, "-m", "mpi4py.futures", script, *bench_args]
        else:
            cmd = [self.mpirun, "-n", "1", self.python, script, *bench_args]
        return self.run(cmd, btl, f"mpi4py.futures, {mode}, btl {btl}")

    def ping(self, btl):
        return self.run([self.mpirun, "-n", "2", str(self.pingpong)], btl, f"ping-pong, btl {btl}")

    def ferry_spin(self, spin_us, bench_args):
        cmd = [self.mpirun, "-n", "1", str(self.bench), *bench_args, ":", "-n", "2", str(self.agent)]
        return self.run(cmd, TRANSPORTS["shm"][1], f"ferry, job, FERRY_MPI_SPIN_US={spin_us}",
                        {"FERRY_MPI_SPIN_US": str(spin_us)})

    def blocking_wait(self, yield_when_idle):
        cmd = [self.mpirun, "-n", "2", str(self.pingpong), "--iterations", "1000", "--blocking-idle", "2"]
        return self.run(cmd, TRANSPORTS["shm"][1], f"blocking MPI_Recv, mpi_yield_when_idle={yield_when_idle}",
                        {"OMPI_MCA_mpi_yield_when_idle": str(yield_when_idle)})

    def ranks(self, n, tasks):
        cmd = [self.mpirun, "--oversubscribe", "-n", "1", str(self.bench), "--ranks", "--tasks", str(tasks),
               ":", "-n", str(n), str(self.agent)]
        return self.run(cmd, "self,vader,tcp", f"ferry --ranks, {n} agents")

    def dead_rank(self, n, timeout_ms, btl="self,vader,tcp"):
        cmd = [self.mpirun, "--oversubscribe", "-n", "1", str(self.bench), "--dead-rank",
               ":", "-n", str(n), str(self.agent)]
        return self.run(cmd, btl, f"ferry --dead-rank, {n} agents, btl {btl}",
                        {"FERRY_MPI_TIMEOUT_MS": str(timeout_ms)})


# ---- figures --------------------------------------------------------------------------------------

def value(recs, key):
    rec = recs.get(key)
    v = None if rec is None else rec.get("value")
    return v if isinstance(v, (int, float)) else None


def collect(runs, key):
    """The values of metric key over several runs (missing ones left out)."""
    return [v for v in (value(r, key) for r in runs) if v is not None]


def med(values):
    return statistics.median(values) if values else None


def fmt_value(v):
    if v is None:
        return "n/a"
    if float(v).is_integer() and abs(v) < 100:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_spread(values):
    """"median (min–max)" of a sample; just the value for one."""
    if not values:
        return "n/a"
    m = fmt_value(med(values))
    if len(values) == 1:
        return m
    return f"{m} ({fmt_value(min(values))}–{fmt_value(max(values))})"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    return f"{r:.0f}×" if r >= 100 else f"{r:.1f}×" if r >= 10 else f"{r:.2f}×"


def better_ratio(kind, ferry, other):
    """How many times better ferry is than the other (> 1: ferry better)."""
    if ferry is None or other is None or ferry <= 0 or other <= 0:
        return None
    return ferry / other if kind == RATE else other / ferry


def met_word(met):
    return "not measured" if met is None else "met" if met else "**not met**"


# ---- speed ----------------------------------------------------------------------------------------

def run_speed(runner, rounds, quick):
    bench_args = ["--roundtrips", "200", "--submits", "2000", "--map-inputs", "50000", "--map-runs", "1"] if quick else []
    results = {s: {"ferry": [], "mpi4py": []} for s in SETTINGS}
    pings = {t: [] for t in TRANSPORTS}
    for r in range(rounds):
        print(f"# round {r + 1} of {rounds}", file=sys.stderr, flush=True)
        for t in TRANSPORTS:
            pings[t].append(runner.ping(TRANSPORTS[t][1]))
        for mode, t in SETTINGS:
            btl = TRANSPORTS[t][1]
            # Alternate which side goes first, so neither always runs on a cooler machine.
            sides = ["ferry", "mpi4py"] if r % 2 == 0 else ["mpi4py", "ferry"]
            for side in sides:
                run = runner.ferry if side == "ferry" else runner.mpi4py
                results[(mode, t)][side].append(run(mode, btl, bench_args))
    return results, pings


def speed_targets(results, pings):
    """[(setting, target, met, figures)]."""
    out = []
    for mode, t in SETTINGS:
        where = f"{MODE_NAMES[mode]}, {TRANSPORTS[t][0]}"
        f, m = results[(mode, t)]["ferry"], results[(mode, t)]["mpi4py"]

        def times(key, kind, at_least, what):
            fv, mv = med(collect(f, key)), med(collect(m, key))
            r = better_ratio(kind, fv, mv)
            figures = f"{fmt_ratio(r)} (ferry {fmt_value(fv)}, mpi4py.futures {fmt_value(mv)})"
            out.append((where, what, None if r is None else r >= at_least, figures))

        times("roundtrip_us_median", TIME, 10, "round trip (median) ≥ 10× faster than mpi4py.futures")
        fv, pv = med(collect(f, "roundtrip_us_median")), med(collect(pings[t], "pingpong_roundtrip_us_median"))
        r = fv / pv if fv and pv else None
        out.append((where, "round trip (median) within 10× of the raw MPI ping-pong round trip",
                    None if r is None else r <= 10,
                    f"{fmt_ratio(r)} the ping-pong (ferry {fmt_value(fv)} µs, ping-pong {fmt_value(pv)} µs)"))
        times("submit_tasks_per_s", RATE, 10, "submit one by one ≥ 10× mpi4py.futures' rate")
        times("map_chunk1000_tasks_per_s", RATE, 5, "map chunksize 1000 ≥ 5× mpi4py.futures' rate")
        for key, what in (("idle_host_cpu_percent", "idle: hub (host process) < 2 % of a core"),
                          ("idle_agent_cpu_percent_max", "idle: every agent < 2 % of a core")):
            vals = collect(f, key)
            v = med(vals)
            out.append((where, what, None if v is None else v < IDLE_LIMIT,
                        f"{fmt_value(v)} % (median over rounds; worst round {fmt_value(max(vals) if vals else None)} %)"))
    return out


def speed_markdown(results, pings, targets, rounds, quick):
    lines = [
        f"Medians over {rounds} round{'s' if rounds != 1 else ''} (range in parentheses), host + 2 "
        "workers on both sides, trivial task (ferry: the math plugin's `square`; mpi4py: a Python "
        "`square`). \"ferry vs mpi4py\" is mpi4py.futures' figure over ferry's for times, ferry's over "
        "mpi4py.futures' for rates: above 1× ferry is better. Idle CPU is over 2 s with nothing "
        "submitted, after the work, in % of one core; ferry's host process holds the hub thread.",
        "",
    ]
    if quick:
        lines += ["**`--quick` smoke run: 200 round trips, 2,000 submits, 50,000 mapped ints, one "
                  "round. Do not quote it.**", ""]
    lines += ["| setting | metric | unit | ferry | mpi4py.futures | ferry vs mpi4py |",
              "|---|---|---|---:|---:|---:|"]
    for mode, t in SETTINGS:
        f, m = results[(mode, t)]["ferry"], results[(mode, t)]["mpi4py"]
        where = f"{MODE_NAMES[mode]}, {TRANSPORTS[t][0]}"
        for label, unit, key, kind in SPEED_ROWS:
            fv, mv = collect(f, key), collect(m, key)
            r = better_ratio(kind, med(fv), med(mv))
            lines.append(f"| {where} | {label} | {unit} | {fmt_spread(fv)} | {fmt_spread(mv)} | {fmt_ratio(r)} |")
    lines += ["", "Raw MPI ping-pong, `mpirun -n 2 ferry-mpi-pingpong` (8 bytes, rank 0 → 1 → 0, "
              "100,000 timed round trips; a round trip, like ferry's request and reply):", "",
              "| transport | btl | round trip, median | round trip, p90 | one way (half the median) |",
              "|---|---|---:|---:|---:|"]
    for t, (name, btl) in TRANSPORTS.items():
        p = pings[t]
        lines.append(f"| {name} | `{btl}` | {fmt_spread(collect(p, 'pingpong_roundtrip_us_median'))} µs | "
                     f"{fmt_spread(collect(p, 'pingpong_roundtrip_us_p90'))} µs | "
                     f"{fmt_spread(collect(p, 'pingpong_oneway_us_median'))} µs |")
    met = sum(1 for *_, ok, _ in targets if ok)
    lines += ["", f"Targets: {met} of {len(targets)} met in this run.", "",
              "| setting | target | result | figures |", "|---|---|---|---|"]
    lines += [f"| {w} | {t} | {met_word(ok)} | {fig} |" for w, t, ok, fig in targets]
    lines += ["", "Spawn over shared memory is not measured: Open MPI 4.1's vader transport connects "
              "only the processes of one job, and MPI_Comm_spawn starts a new one (with `btl "
              "self,vader` the spawned agents fail in MPI_Init, \"Unreachable\"; with `self,vader,tcp` "
              "host and agents talk TCP), for ferry and mpi4py.futures alike."]
    return lines


# ---- pacing ---------------------------------------------------------------------------------------

PACING_ROWS = [
    ("round trip, median", "µs", "roundtrip_us_median"),
    ("round trip, p90", "µs", "roundtrip_us_p90"),
    ("submit one by one", "tasks/s", "submit_tasks_per_s"),
    ("map, chunksize 1000", "tasks/s", "map_chunk1000_tasks_per_s"),
    ("idle: host", "% of a core", "idle_host_cpu_percent"),
    ("idle: busiest agent", "% of a core", "idle_agent_cpu_percent_max"),
]


def run_pacing(runner, rounds, values, quick):
    bench_args = (["--roundtrips", "200", "--submits", "2000", "--map-inputs", "50000", "--map-runs", "1"] if quick
                  else ["--roundtrips", "1000", "--submits", "20000", "--map-runs", "1"])
    spins = {v: [] for v in values}
    waits = {0: [], 1: []}
    for r in range(rounds):
        print(f"# pacing, round {r + 1} of {rounds}", file=sys.stderr, flush=True)
        for v in (values if r % 2 == 0 else list(reversed(values))):
            spins[v].append(runner.ferry_spin(v, bench_args))
        for y in waits:
            waits[y].append(runner.blocking_wait(y))
    return spins, waits


def pacing_markdown(spins, waits, rounds, quick):
    values = list(spins)
    lines = [
        f"The job of N over shared memory (host + 2 agents, as above) with `FERRY_MPI_SPIN_US` set to each "
        f"value, medians over {rounds} round{'s' if rounds != 1 else ''} (range in parentheses; 1,000 round "
        "trips, 20,000 submits, one map of 200,000 per run). The spin window is how long the hub (or the "
        "thread relaying for it) and each agent keep looking after their last activity, yielding the CPU "
        "between looks; past it they nap in `ppoll()` on their descriptors, 50 µs doubling to 2 ms (to 8 ms "
        "after 100 ms of quiet). Idle CPU does not depend on the window (the naps set it); latency and rates do.",
        "",
    ]
    if quick:
        lines += ["**`--quick` smoke run. Do not quote it.**", ""]
    lines += ["| metric | unit | " + " | ".join(f"`{v}`" for v in values) + " |",
              "|---|---|" + "---:|" * len(values)]
    for label, unit, key in PACING_ROWS:
        lines.append(f"| {label} | {unit} | " + " | ".join(fmt_spread(collect(spins[v], key)) for v in values) + " |")
    lines += ["", "A rank that waits inside MPI instead (`ferry-mpi-pingpong --blocking-idle 2`: rank 1 in a "
              "blocking `MPI_Recv` for 2 s, shared memory):", "",
              "| `mpi_yield_when_idle` | CPU of the waiting rank |", "|---|---:|"]
    for y, runs in waits.items():
        lines.append(f"| {y} | {fmt_spread(collect(runs, 'blocking_wait_cpu_percent'))} % of a core |")
    return lines


# ---- many ranks -----------------------------------------------------------------------------------

def run_ranks(runner, ns, tasks, dead_timeout_ms):
    """Per N: the --ranks run and the dead-rank run; then the dead-rank run of the smallest N over
    TCP alone (between the ranks of one job the others use shared memory)."""
    out = {}
    for n in ns:
        out[n] = (runner.ranks(n, tasks), runner.dead_rank(n, dead_timeout_ms))
    tcp = (ns[0], runner.dead_rank(ns[0], dead_timeout_ms, "self,tcp")) if ns else None
    return out, tcp


def above_idle(r, tasks):
    """Host CPU per task (µs) less the host's idle burn over the run's wall time."""
    cpu, rate, idle = value(r, "host_cpu_s"), value(r, "tasks_per_s"), value(r, "idle_host_cpu_percent")
    if cpu is None or not rate or idle is None:
        return None
    return (cpu - idle / 100 * tasks / rate) / tasks * 1e6


def ranks_markdown(ranks_and_tcp, tasks, dead_timeout_ms, quick):
    ranks, tcp = ranks_and_tcp
    lines = [
        f"`mpirun --oversubscribe -n 1 ferry-mpi-bench --ranks --tasks {tasks} : -n N ferry-mpi-worker` "
        f"with `OMPI_MCA_btl=self,vader,tcp` (one run per N, every agent a worker, on this 2-core machine: "
        f"N > 1 is oversubscribed): first result is from Executor construction (MPI initialised by the "
        f"hub then) to the first `square`; {tasks:,} tasks are submitted one by one and got in order, every "
        f"other one `square(i % 1000)` (checked) and the rest `worker_pid()` (which must be a worker of the "
        f"pool; they give the tasks per worker); host CPU is the host process's user+sys during those tasks "
        f"(the hub is one of its threads); idle CPU is over 2 s with nothing submitted. Dead rank: a "
        f"separate job of the same shape with `FERRY_MPI_TIMEOUT_MS={dead_timeout_ms}`, one "
        f"`slow_identity` per worker, SIGKILL of the agent of one worker (found as the worker's parent), "
        f"time until that task's future fails with `TerminatedWorkerError`; \"rest\" is the other slow "
        f"tasks cancelled (their workers killed and replaced) and then a map of 100 squares on the ranks "
        f"left; \"round trip after\" is the median of 1,000 `submit(square, i).get()` after that.",
        "",
    ]
    if quick:
        lines += [f"**`--quick` smoke run: {tasks:,} tasks. Do not quote it.**", ""]
    lines += ["| agents N | workers | wrong results | tasks/s | host CPU: s | host CPU: µs per task | "
              "host CPU above idle: µs per task | host CPU: % of a core | tasks per worker: min–max "
              "(even share) | first result | all workers up | idle: host | idle: busiest agent | "
              "dead rank detected | after the loss: cancel + map | after the loss: round trip |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, (r, d) in ranks.items():
        workers = value(r, "workers")
        lo, hi = value(r, "tasks_per_worker_min"), value(r, "tasks_per_worker_max")
        share = f" ({fmt_value(tasks / 2 / workers)})" if workers else ""
        balance = f"{fmt_value(lo)}–{fmt_value(hi)}{share}" if lo is not None else "n/a"
        wrong = value(r, "results_wrong")
        lines.append(
            f"| {n} | {fmt_value(workers)} | {fmt_value(wrong) if wrong is not None else 'n/a'} | "
            f"{fmt_value(value(r, 'tasks_per_s'))} | {fmt_value(value(r, 'host_cpu_s'))} | "
            f"{fmt_value(value(r, 'host_cpu_us_per_task'))} | {fmt_value(above_idle(r, tasks))} | "
            f"{fmt_value(value(r, 'host_cpu_percent'))} % | "
            f"{balance} | {fmt_value(value(r, 'first_result_ms'))} ms | {fmt_value(value(r, 'all_workers_up_ms'))} ms | "
            f"{fmt_value(value(r, 'idle_host_cpu_percent'))} % | {fmt_value(value(r, 'idle_agent_cpu_percent_max'))} % | "
            f"{fmt_value(value(d, 'dead_rank_detect_ms'))} ms | {fmt_value(value(d, 'dead_rank_rest_ms'))} ms | "
            f"{fmt_value(value(d, 'dead_rank_after_roundtrip_us'))} µs |")
    if tcp:
        n, d = tcp
        lines += ["", f"The dead-rank run of N={n} again over TCP alone (`OMPI_MCA_btl=self,tcp`):", "",
                  "| agents N | dead rank detected | after the loss: cancel + map | after the loss: round trip |",
                  "|---:|---:|---:|---:|",
                  f"| {n} | {fmt_value(value(d, 'dead_rank_detect_ms'))} ms | "
                  f"{fmt_value(value(d, 'dead_rank_rest_ms'))} ms | "
                  f"{fmt_value(value(d, 'dead_rank_after_roundtrip_us'))} µs |"]
    # The checks item 2 asks for.
    ns = list(ranks)
    biggest = ranks[ns[-1]][0] if ns else {}
    wrong = value(biggest, "results_wrong")
    correct = None if wrong is None or value(biggest, "workers") is None else (
        wrong == 0 and value(biggest, "workers") == ns[-1])
    lines += ["", "| check | result | figures |", "|---|---|---|",
              f"| {ns[-1] if ns else '?'} agent ranks, oversubscribed on {os.cpu_count()} cores, run {tasks:,} tasks "
              f"correctly | {met_word(correct)} | "
              f"{fmt_value(value(biggest, 'workers'))} workers, {fmt_value(wrong)} wrong results |"]
    for what, get in (("host CPU per task", lambda r: value(r, "host_cpu_us_per_task")),
                      ("host CPU above idle per task", lambda r: above_idle(r, tasks))):
        per_task = [(n, get(ranks[n][0])) for n in ns]
        per_task = [(n, v) for n, v in per_task if v is not None]
        if len(per_task) >= 2:
            (n0, v0), (n1, v1) = per_task[0], per_task[-1]
            growth = v1 / v0 if v0 and v0 > 0 else None
            lines.append(f"| {what} does not grow with N (at most 1.5× from N={n0} to N={n1}) | "
                         f"{met_word(None if growth is None else growth <= 1.5)} | "
                         f"{fmt_value(v0)} µs at N={n0}, {fmt_value(v1)} µs at N={n1}: {fmt_ratio(growth)} |")
        else:
            lines.append(f"| {what} does not grow with N | not measured | fewer than two N measured |")
    idle = [(n, value(ranks[n][0], "idle_host_cpu_percent"), value(ranks[n][0], "idle_agent_cpu_percent_max"))
            for n in ns]
    measured = [(n, h, a) for n, h, a in idle if h is not None and a is not None]
    worst = max(measured, key=lambda x: max(x[1], x[2])) if measured else None
    lines.append("| idle: hub (host process) and every agent < 2 % of a core at every N | "
                 + (f"{met_word(all(h < IDLE_LIMIT and a < IDLE_LIMIT for _, h, a in measured))} | "
                    f"host {', '.join(f'{fmt_value(h)} %' for _, h, _ in measured)}; busiest agent "
                    f"{', '.join(f'{fmt_value(a)} %' for _, _, a in measured)} (N = {', '.join(str(n) for n, _, _ in measured)}) |"
                    if worst else "not measured | |"))
    lines += ["", "\"Above idle\" takes away what the host burns with nothing to do (its idle % of a "
              "core, measured after the run, times the run's wall time): at a low task rate that "
              "fixed cost dominates the plain per-task figure. The 1.5× bound is this script's "
              "reading of \"no per-task cost that grows with N\" on a noisy 2-core machine, not a "
              "figure from the issue; the rows above are the evidence."]
    return lines


# ---- the docs section -----------------------------------------------------------------------------

def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


MPI4PY_VERSION = "import sys, mpi4py; print(sys.executable, sys.version.split()[0], 'mpi4py', mpi4py.__version__)"


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run_info(args, load_before):
    git = first_line(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"])
    # Changes to the report itself (an earlier run's section) are not changes to what is measured.
    try:
        report = os.path.relpath(Path(args.output).resolve(), REPO_DIR)
        status = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30).stdout.splitlines()
        dirty = "" if all(l[3:] == report for l in status) else "dirty"
    except (OSError, subprocess.SubprocessError):
        dirty = "unknown"
    command = shlex.join([sys.executable, *sys.argv])
    if os.environ.get("MAKELEVEL"):
        command = f"make bench → {command}"
    model = "unknown"
    try:
        model = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                     if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [
        f"- command: `{command}`",
        f"- ferry commit: {git}{'' if dirty in ('', 'unknown') else ' + uncommitted changes'}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} vCPUs ({model}), {platform.system()} {platform.release()}; "
        f"{first_line([args.mpirun, '--version'])}; "
        f"{first_line([args.python, '-c', MPI4PY_VERSION])}",
        f"- load average {load_before} before the run, {loadavg()} after it (the machine is shared: "
        "read ratios of one run, not absolute figures)",
    ]


def split_parts(text):
    """The section's own parts: {heading line: its lines} for the '### ' headings it holds."""
    parts, current = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            current = line
            parts[current] = []
        elif current is not None:
            parts[current].append(line)
    return parts


def update_doc(path, speed_part, pacing_part, ranks_part):
    """Replaces the section (from its heading to the next '## ' heading, or the end) in place;
    appends it when absent. A part given as None keeps its earlier text."""
    p = Path(path)
    text = p.read_text() if p.exists() else ""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == SECTION), None)
    end = len(lines)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    old = split_parts("\n".join(lines[start + 1:end])) if start is not None else {}

    def part(heading, new):
        if new is not None:
            return [heading, "", *new, ""]
        if heading in old:
            body = old[heading]
            while body and not body[-1].strip():
                body = body[:-1]
            return [heading, *body, ""]
        return [heading, "", "Not measured yet: run `python3 bench/mpi_compare.py --build build/default"
                + (" --ranks-only`." if heading == RANKS_HEADING else "`."), ""]

    # Text between the section's lead paragraph and its first part (written by hand: the analysis
    # of the figures) is kept as it is.
    lead = []
    if start is not None:
        body = lines[start + 1:end]
        first = next((i for i, l in enumerate(body) if l.startswith("### ")), len(body))
        paragraphs = "\n".join(body[:first]).strip().split("\n\n")
        lead = [l for p in paragraphs[1:] for l in (p.splitlines() + [""])]

    section = [
        SECTION,
        "",
        "Written by `bench/mpi_compare.py`, not by `compare.py` (which replaces only its own marked "
        "sections: `make bench` runs `mpi_compare.py --ranks` after it). ferry's \"mpi\" backend, "
        "mpi4py.futures' `MPIPoolExecutor` and a raw MPI ping-pong, all under Open MPI on this one "
        "machine, as root, over loopback. Programs: `bench/mpi/ferry_mpi_bench.cpp` "
        "(`ferry-mpi-bench`), `bench/mpi/mpi4py_bench.py`, `bench/mpi/pingpong.c` "
        "(`ferry-mpi-pingpong`); each prints one JSON line per metric. Each part below says how and "
        "when it was taken.",
        "",
        *lead,
        *part(SPEED_HEADING, speed_part),
        *part(PACING_HEADING, pacing_part),
        *part(RANKS_HEADING, ranks_part),
    ]
    while section and not section[-1].strip():
        section.pop()
    if start is None:
        before = lines
        while before and not before[-1].strip():
            before = before[:-1]
        new_lines = [*before, "", *section] if before else section
    else:
        after = lines[end:]
        new_lines = [*lines[:start], *section, *([""] + after if after else [])]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(new_lines) + "\n")


# ---- main -----------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description="ferry's MPI backend beside mpi4py.futures and raw MPI (issue 13).")
    parser.add_argument("--build", default="build/default", help="build tree with bin/ferry-mpi-bench (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the speed comparison (default: %(default)s)")
    parser.add_argument("--ranks", action="store_true", help="also the many-ranks table (item 2)")
    parser.add_argument("--ranks-only", action="store_true", help="only the many-ranks table")
    parser.add_argument("--ranks-n", default="2,4,8,16", help="agent counts of the many-ranks table (default: %(default)s)")
    parser.add_argument("--ranks-tasks", type=int, default=20_000, help="tasks per many-ranks run (default: %(default)s)")
    parser.add_argument("--dead-rank-timeout-ms", type=int, default=1000,
                        help="FERRY_MPI_TIMEOUT_MS of the dead-rank runs (default: %(default)s)")
    parser.add_argument("--no-pacing", action="store_true", help="skip the FERRY_MPI_SPIN_US sweep")
    parser.add_argument("--pacing-values", default="0,50,200,500,2000",
                        help="FERRY_MPI_SPIN_US values of the pacing sweep (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, one round, N = 2, 4")
    parser.add_argument("--python", default=SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable,
                        help="Python with mpi4py (default: %(default)s)")
    parser.add_argument("--mpirun", default="mpirun", help="Open MPI's launcher (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per mpirun (default: %(default)s)")
    parser.add_argument("--output", default=str(REPO_DIR / "docs" / "benchmarks.md"),
                        help="markdown file whose section is updated (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave the file alone")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        ns = [int(x) for x in args.ranks_n.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--ranks-n: not a list of numbers: {args.ranks_n}")
    try:
        pacing_values = [int(x) for x in args.pacing_values.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--pacing-values: not a list of numbers: {args.pacing_values}")
    if any(n < 2 for n in ns):
        parser.error("--ranks-n: each N must be at least 2 (the dead-rank run loses one)")
    rounds, tasks = args.rounds, args.ranks_tasks
    if args.quick:
        rounds, tasks, ns = 1, min(tasks, 2000), [n for n in ns if n <= 4] or [2]

    runner = Runner(args)
    load_before = loadavg()
    speed_part = pacing_part = ranks_part = None

    def errors_since(first):
        new = runner.errors[first:]
        return ["", "Errors in this run:", "", *[f"- {e}" for e in new]] if new else []

    if not args.ranks_only:
        first = len(runner.errors)
        results, pings = run_speed(runner, rounds, args.quick)
        targets = speed_targets(results, pings)
        speed_part = (run_info(args, load_before) + [""] + speed_markdown(results, pings, targets, rounds, args.quick)
                      + errors_since(first))
        if not args.no_pacing:
            first = len(runner.errors)
            load_pacing = loadavg()
            spins, waits = run_pacing(runner, rounds, pacing_values, args.quick)
            pacing_part = (run_info(args, load_pacing) + [""] + pacing_markdown(spins, waits, rounds, args.quick)
                           + errors_since(first))
    if args.ranks or args.ranks_only:
        first = len(runner.errors)
        load_ranks = loadavg()
        ranks = run_ranks(runner, ns, tasks, args.dead_rank_timeout_ms)
        ranks_part = (run_info(args, load_ranks) + [""] + ranks_markdown(ranks, tasks, args.dead_rank_timeout_ms, args.quick)
                      + errors_since(first))

    for heading, part in ((SPEED_HEADING, speed_part), (PACING_HEADING, pacing_part), (RANKS_HEADING, ranks_part)):
        if part is not None:
            print("\n".join([heading, "", *part, ""]))
    if not args.no_write:
        update_doc(args.output, speed_part, pacing_part, ranks_part)
        print(f"updated the section \"{SECTION[3:]}\" of {args.output}")
    return 1 if runner.errors else 0


if __name__ == "__main__":
    sys.exit(main())
