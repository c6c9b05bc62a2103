# SPDX-License-Identifier: BSD-3-Clause
# loky_bench.py: the work of ferry-bench done with loky 3.3 (Debian's python3-joblib), same metric names.
#
#   /usr/bin/python3 bench/loky_bench.py [--quick] [--only NAME] [--list]
#
# Prints one JSON object per metric on stdout: {"metric", "value", "unit", "note"}; a metric that
# could not be measured has "value": null and the error in its note (exit status 1).
import argparse
import json
import math
import os
import subprocess
import sys
import time

from joblib.externals import loky
from joblib.externals.loky.process_executor import TerminatedWorkerError

from loky_tasks import byte_count, func_async, pid_after, segfault, square

POOL_SIZE = 2
now = time.perf_counter  # CLOCK_MONOTONIC, as steady_clock in ferry-bench


def percentile(values, p):
    """Nearest-rank percentile, as ferry-bench computes it."""
    v = sorted(values)
    rank = math.ceil(p / 100 * len(v))
    return v[min(max(rank, 1), len(v)) - 1]


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def spread(values, digits=3):
    return f"n={len(values)}, min {min(values):.{digits}f}, max {max(values):.{digits}f}"


def metric(name, value, unit, note):
    value = None if value is None else float(f"{value:.6g}")
    return {"metric": name, "value": value, "unit": unit, "note": note}


def executor():
    return loky.get_reusable_executor(max_workers=POOL_SIZE)


def warm_pool(ex):
    """Every worker up and has run a task of loky_tasks (so the module is imported everywhere)."""
    for _ in range(50):
        pids = {f.result() for f in [ex.submit(pid_after, 10) for _ in range(POOL_SIZE)]}
        if len(pids) == POOL_SIZE and len(ex._processes) == POOL_SIZE:
            return ex
    raise RuntimeError("warm_pool: tasks never reached both workers")


def make_inputs(n):
    return [i % 1000 for i in range(n)]


# ---- cold start ---------------------------------------------------------------------------------

def cold_child():
    ex = loky.get_reusable_executor(max_workers=POOL_SIZE)
    v = ex.submit(square, 3).result()
    if v != 9:
        print(f"cold child: square(3) = {v}", file=sys.stderr)
        return 1
    sys.stdout.write("ok\n")
    sys.stdout.flush()
    return 0


def time_cold_child():
    cmd = [sys.executable, os.path.abspath(__file__), "--cold-child"]
    t0 = now()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    seen = b""
    t1 = None
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 256)
        if not chunk:
            break
        seen += chunk
        if b"ok\n" in seen:
            t1 = now()
            break
    proc.stdout.close()
    rc = proc.wait(timeout=120)
    if t1 is None:
        raise RuntimeError(f"cold child ended without 'ok' (output {seen!r}, status {rc})")
    if rc != 0:
        raise RuntimeError(f"cold child printed ok but exited with status {rc}")
    return (t1 - t0) * 1000


def bench_cold_start(quick):
    ms = [time_cold_child() for _ in range(5 if quick else 20)]
    return [metric("cold_start_ms", median(ms), "ms",
                   "median: spawn of python3 loky_bench.py --cold-child -> get_reusable_executor(2) "
                   f"-> square(3) -> 'ok' read; {spread(ms)}")]


# ---- round trip and throughput -------------------------------------------------------------------

def bench_roundtrip(quick):
    warm, n = 200, 2000
    ex = warm_pool(executor())
    for i in range(warm):
        assert ex.submit(square, i).result() == i * i
    us = []
    for i in range(n):
        x = i % 1000
        t0 = now()
        v = ex.submit(square, x).result()
        t1 = now()
        assert v == x * x
        us.append((t1 - t0) * 1e6)
    note = (f"sequential submit(square, i).result() on a warm pool of 2, {warm} warm-up calls; "
            f"{spread(us)}, p10 {percentile(us, 10):.3f}, p99 {percentile(us, 99):.3f}")
    return [metric("roundtrip_us_median", median(us), "us", note),
            metric("roundtrip_us_p90", percentile(us, 90), "us", note)]


def bench_submit_all(quick):
    n = 10_000 if quick else 100_000
    inputs = make_inputs(n)
    ex = warm_pool(executor())
    t0 = now()
    futures = [ex.submit(square, x) for x in inputs]
    t_submitted = now()
    total = sum(f.result() for f in futures)
    t1 = now()
    assert total == sum(x * x for x in inputs)
    s = t1 - t0
    return [metric("submit_100k_tasks_per_s", n / s, "tasks/s",
                   f"{n} submit(square, i) one by one, then result() all; total {s * 1000:.1f} ms, "
                   f"of which submitting {(t_submitted - t0) * 1000:.1f} ms"
                   + (" (--quick: 10k tasks)" if quick else ""))]


def bench_map(quick, chunksize):
    n = 10_000 if quick and chunksize == 1 else 100_000
    runs = 1 if chunksize == 1 else (3 if quick else 5)
    inputs = make_inputs(n)
    expect = sum(x * x for x in inputs)
    ex = warm_pool(executor())
    rates = []
    for _ in range(runs):
        t0 = now()
        out = list(ex.map(square, inputs, chunksize=chunksize))
        t1 = now()
        assert len(out) == n and sum(out) == expect
        rates.append(n / (t1 - t0))
    name = "map_chunk1_tasks_per_s" if chunksize == 1 else "map_chunk1000_tasks_per_s"
    note = f"list(map(square, {n} ints, chunksize={chunksize}))"
    note += f", median over runs; {spread(rates, 0)}" if runs > 1 else ", one run"
    if quick and chunksize == 1:
        note += " (--quick: 10k inputs)"
    return [metric(name, median(rates), "tasks/s", note)]


# ---- large arguments -----------------------------------------------------------------------------

def time_vector(quick, pickler):
    n = 5 if quick else 20
    big = list(range(1_000_000))
    loky.set_loky_pickler(pickler)
    try:
        ex = warm_pool(executor())
        for _ in range(2):
            assert ex.submit(func_async, 21, big).result() == 42
        ms = []
        for _ in range(n):
            t0 = now()
            v = ex.submit(func_async, 21, big).result()
            t1 = now()
            assert v == 42
            ms.append((t1 - t0) * 1000)
        return ms
    finally:
        loky.set_loky_pickler()  # back to the default (LOKY_PICKLER or cloudpickle)


def bench_vector(quick):
    ms = time_vector(quick, None)
    return [metric("vector_1m_ms", median(ms), "ms",
                   "submit(func_async, 21, list(range(1e6))).result(), default loky pickler "
                   f"(cloudpickle), median; {spread(ms)}")]


def bench_vector_pickle(quick):
    ms = time_vector(quick, "pickle")
    return [metric("vector_1m_pickle_ms", median(ms), "ms",
                   "submit(func_async, 21, list(range(1e6))).result(), "
                   f"set_loky_pickler('pickle'), median; {spread(ms)}")]


def bench_bytes(size, name, n):
    data = bytes(size)
    ex = warm_pool(executor())
    assert ex.submit(byte_count, data).result() == size
    ms = []
    for _ in range(n):
        t0 = now()
        v = ex.submit(byte_count, data).result()
        t1 = now()
        assert v == size
        ms.append((t1 - t0) * 1000)
    med = median(ms)
    return [metric(name, med, "ms",
                   f"submit(byte_count, bytes({size})).result(), median = "
                   f"{size / 1e6 / (med / 1000):.0f} MB/s; {spread(ms)}")]


# ---- crashes -------------------------------------------------------------------------------------

def bench_crash(quick):
    n = 3 if quick else 10
    death_ms, next_ms = [], []
    for _ in range(n):
        ex = warm_pool(executor())
        t0 = now()
        f = ex.submit(segfault, 1)
        try:
            f.result()
            raise RuntimeError("segfault(1) returned instead of failing")
        except TerminatedWorkerError:
            t1 = now()
        v = loky.get_reusable_executor(max_workers=POOL_SIZE).submit(square, 2).result()
        t2 = now()
        assert v == 4
        death_ms.append((t1 - t0) * 1000)
        next_ms.append((t2 - t1) * 1000)
    return [metric("death_to_failure_ms", median(death_ms), "ms",
                   "submit(segfault, 1) (os.kill SIGSEGV) on a warm pool -> result() raises "
                   f"TerminatedWorkerError, median; {spread(death_ms)}"),
            metric("crash_to_next_result_ms", median(next_ms), "ms",
                   "that failure -> get_reusable_executor(max_workers=2).submit(square, 2).result() "
                   f"returns, median; {spread(next_ms)}")]


# ---- memory --------------------------------------------------------------------------------------

def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bench_rss(quick):
    ex = warm_pool(executor())
    inputs = make_inputs(100)
    futures = [ex.submit(square, x) for x in inputs]
    assert sum(f.result() for f in futures) == sum(x * x for x in inputs)
    pids = list(ex._processes)
    each = [vm_rss_kb(pid) for pid in pids]
    return [metric("idle_worker_rss_kb", max(each), "kB",
                   f"max VmRSS of the {len(pids)} workers (executor._processes) after 100 tasks "
                   f"on a warm pool; each: {', '.join(map(str, each))} kB")]


# ---- driver --------------------------------------------------------------------------------------

GROUPS = [
    (["cold_start_ms"], bench_cold_start),
    (["roundtrip_us_median", "roundtrip_us_p90"], bench_roundtrip),
    (["submit_100k_tasks_per_s"], bench_submit_all),
    (["map_chunk1_tasks_per_s"], lambda q: bench_map(q, 1)),
    (["map_chunk1000_tasks_per_s"], lambda q: bench_map(q, 1000)),
    (["vector_1m_ms"], bench_vector),
    (["vector_1m_pickle_ms"], bench_vector_pickle),
    (["bytes_8mb_ms"], lambda q: bench_bytes(8_000_000, "bytes_8mb_ms", 3 if q else 10)),
    (["bytes_80mb_ms"], lambda q: bench_bytes(80_000_000, "bytes_80mb_ms", 2 if q else 5)),
    (["death_to_failure_ms", "crash_to_next_result_ms"], bench_crash),
    (["idle_worker_rss_kb"], bench_rss),
]


def main():
    parser = argparse.ArgumentParser(description="loky's side of ferry's benchmarks (JSON lines).")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--only", metavar="METRIC", help="run only the measurement of METRIC")
    parser.add_argument("--list", action="store_true", help="print the metric names and exit")
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_child:
        return cold_child()
    names = [n for group, _ in GROUPS for n in group]
    if args.list:
        print("\n".join(names))
        return 0
    if args.only and args.only not in names:
        print(f"loky_bench: unknown metric {args.only!r} (see --list)", file=sys.stderr)
        return 2
    status = 0
    for group, run in GROUPS:
        if args.only and args.only not in group:
            continue
        try:
            results = run(args.quick)
        except Exception as e:  # report and go on with the next metric
            print(f"loky_bench: {group[0]}: {type(e).__name__}: {e}", file=sys.stderr)
            results = [metric(n, None, "", f"error: {type(e).__name__}: {e}") for n in group]
            status = 1
        for m in results:
            if not args.only or m["metric"] == args.only:
                print(json.dumps(m), flush=True)
    loky.get_reusable_executor(max_workers=POOL_SIZE).shutdown(wait=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
