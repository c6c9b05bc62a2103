# SPDX-License-Identifier: BSD-3-Clause
# mpi4py_bench.py: ferry-mpi-bench's metrics measured with mpi4py.futures.MPIPoolExecutor (issue 13).
#
#   Job of N:  mpirun -n 3 python3 -m mpi4py.futures bench/mpi/mpi4py_bench.py [options]
#   Spawn:     mpirun -n 1 python3 bench/mpi/mpi4py_bench.py [options]     (workers: MPI_Comm_spawn)
#
# Options as ferry-mpi-bench's: --workers N (2; a job of N uses its own N-1 ranks whatever this
# says), --roundtrips N (1000), --submits N (20000), --map-inputs N (200000), --map-runs N (3),
# --idle-seconds S (2), --timeout S (900: the whole run; past it the program exits 3).
#
# Prints one JSON object per metric on stdout, with the names and units ferry-mpi-bench uses:
# roundtrip_us_median, roundtrip_us_p90, submit_tasks_per_s, map_chunk1000_tasks_per_s,
# idle_host_cpu_percent, idle_agent_cpu_percent_max (here: the mpi4py worker processes). A wrong
# result or an error prints "value": null and the error, and the exit status is then 1. Needs
# Debian's python3-mpi4py; the task functions live in this file, which mpi4py imports in its
# workers (under another __name__, so the code below the __main__ test runs in the host only).
import argparse
import json
import math
import os
import statistics
import sys
import threading
import time


def square(x):
    return x * x


def worker_pid():
    return os.getpid()


def emit(name, value, unit, note):
    print(json.dumps({"metric": name, "value": value, "unit": unit, "note": note}), flush=True)


FAILED = False


def measure(names, body):
    """Runs one measurement; if it raises, its metrics are printed as failures."""
    global FAILED
    try:
        body()
    except Exception as e:  # noqa: BLE001 - every failure becomes a null metric
        FAILED = True
        for name in names:
            emit(name, None, "", f"error: {type(e).__name__}: {e}")


def percentile(values, p):
    """Nearest-rank percentile, p in [0, 100] (as ferry-mpi-bench)."""
    v = sorted(values)
    rank = math.ceil(p / 100 * len(v))
    return v[min(max(rank, 1), len(v)) - 1]


def check(ok, what):
    if not ok:
        raise RuntimeError(f"wrong result: {what}")


def process_cpu_seconds(pid):
    """CPU seconds of process pid, all its threads (schedstat, else utime + stime of stat)."""
    total, found = 0, False
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
                found = True
        except (OSError, ValueError, IndexError):
            pass
    if found:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds():
    # os.times() counts in clock ticks (10 ms): too coarse for a 2 s idle window.
    return process_cpu_seconds(os.getpid())


def make_inputs(n):
    return [i % 1000 for i in range(n)]


def main():
    parser = argparse.ArgumentParser(description="ferry-mpi-bench's metrics with mpi4py.futures")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--roundtrips", type=int, default=1000)
    parser.add_argument("--submits", type=int, default=20_000)
    parser.add_argument("--map-inputs", type=int, default=200_000)
    parser.add_argument("--map-runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    def give_up():
        emit("timeout", None, "", f"error: mpi4py_bench.py did not finish within {args.timeout:g} s")
        os._exit(3)

    watchdog = threading.Timer(args.timeout, give_up)
    watchdog.daemon = True
    watchdog.start()

    from mpi4py import MPI
    from mpi4py.futures import MPIPoolExecutor

    world = MPI.COMM_WORLD.Get_size()
    mode = f"job of {world} (mpi4py.futures' shared pool)" if world > 1 else "spawn (MPI_Comm_spawn)"
    btl = os.environ.get("OMPI_MCA_btl", "(Open MPI's choice)")
    try:
        ex = MPIPoolExecutor(max_workers=args.workers)
        ex.bootup(wait=True)
        workers = ex._max_workers  # noqa: SLF001 - how many it runs, for the notes
        # Warm: every worker has run the task (concurrent submissions spread over the pool).
        for _ in range(20):
            fs = [ex.submit(square, i) for i in range(4 * max(workers, 1))]
            for i, f in enumerate(fs):
                check(f.result() == i * i, "square warm-up")
    except Exception as e:  # noqa: BLE001
        emit("executor", None, "", f"error: {type(e).__name__}: {e}")
        return 1
    pool = f"MPIPoolExecutor, {workers} workers, {mode}, btl {btl}"

    def roundtrip():
        for i in range(100):
            check(ex.submit(square, i).result() == i * i, "square warm-up")
        us = []
        for i in range(args.roundtrips):
            x = i % 1000
            t0 = time.perf_counter()
            v = ex.submit(square, x).result()
            us.append((time.perf_counter() - t0) * 1e6)
            check(v == x * x, "square")
        note = (f"submit(square, i).result(), one at a time, {args.roundtrips} after 100 warm-up calls; "
                f"{pool}; min {min(us):.3f}, p10 {percentile(us, 10):.3f}, p99 {percentile(us, 99):.3f}, "
                f"max {max(us):.3f}")
        emit("roundtrip_us_median", statistics.median(us), "us", note)
        emit("roundtrip_us_p90", percentile(us, 90), "us", note)

    def submit_all():
        inputs = make_inputs(args.submits)
        t0 = time.perf_counter()
        futures = [ex.submit(square, x) for x in inputs]
        submitted = time.perf_counter() - t0
        for i, (x, f) in enumerate(zip(inputs, futures)):
            check(f.result() == x * x, f"square of task {i}")
        total = time.perf_counter() - t0
        emit("submit_tasks_per_s", args.submits / total, "tasks/s",
             f"{args.submits} submit(square, i) one by one, then result() all in order; total "
             f"{total * 1000:.1f} ms, of which submitting {submitted * 1000:.1f} ms; {pool}")

    def map_chunk1000():
        inputs = make_inputs(args.map_inputs)
        want = [x * x for x in inputs]
        rates = []
        for _ in range(args.map_runs):
            t0 = time.perf_counter()
            out = list(ex.map(square, inputs, chunksize=1000))
            dt = time.perf_counter() - t0
            check(out == want, "map results")
            rates.append(args.map_inputs / dt)
        emit("map_chunk1000_tasks_per_s", statistics.median(rates), "tasks/s",
             f"list(map(square, {args.map_inputs} ints, chunksize=1000)), median of {args.map_runs} runs "
             f"({', '.join(f'{r:.0f}' for r in rates)}); {pool}")

    def idle():
        pids = set()
        for _ in range(20):
            pids.update(f.result() for f in [ex.submit(worker_pid) for _ in range(8 * max(workers, 1))])
            if len(pids) >= workers:
                break
        pids = sorted(pids)
        time.sleep(0.2)
        before = [process_cpu_seconds(p) for p in pids]
        h0, t0 = self_cpu_seconds(), time.perf_counter()
        time.sleep(args.idle_seconds)
        wall = time.perf_counter() - t0
        host = (self_cpu_seconds() - h0) / wall * 100
        each = [(process_cpu_seconds(p) - b) / wall * 100 for p, b in zip(pids, before)]
        window = f"{wall:.2f} s idle after the work, nothing submitted"
        emit("idle_host_cpu_percent", host, "% of a core",
             f"host process (its executor's manager thread included), all its threads' run time (/proc/self/task/*/schedstat) over {window}")
        emit("idle_agent_cpu_percent_max", max(each), "% of a core",
             f"max over the {len(pids)} mpi4py worker processes seen (pids from a task) over {window}; each: "
             + ", ".join(f"{p}: {c:.2f} %" for p, c in zip(pids, each)))

    measure(["roundtrip_us_median", "roundtrip_us_p90"], roundtrip)
    measure(["submit_tasks_per_s"], submit_all)
    measure(["map_chunk1000_tasks_per_s"], map_chunk1000)
    measure(["idle_host_cpu_percent", "idle_agent_cpu_percent_max"], idle)
    ex.shutdown(wait=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
