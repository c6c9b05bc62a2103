#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Times `ferry map` on a single long JSON line (issue 10 item 5: each 64 KiB read rescanned the
line, so 100 MB took 21 s and 1 GB hung).

Each case is one line holding one JSON string argument of SIZE bytes, read from a file:
  view_size  the task gets a ferry::BytesView and returns its size (the input path);
  greet      the task returns "hello, " + its std::string argument (input and output paths).
For each, the best of --runs runs: wall time, CPU seconds of ferry and its workers (user + system,
from wait4), and ferry's peak RSS. Prints a Markdown table.

Usage: bench/long_line.py [--build build/default] [--sizes 10,100] [--runs 3] [--tasks view_size,greet]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def run_once(ferry, build, task, path):
    cmd = [ferry, "--plugin-dir", os.path.join(build, "plugins"), "--worker",
           os.path.join(build, "bin", "ferry-worker"), "map", "-j", "1", "--no-progress", task, path]
    start = time.perf_counter()
    with open(os.devnull, "wb") as null:
        child = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        err = child.stderr.read().decode(errors="replace")
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({child.returncode}): {err}")
    # wait4's usage includes the workers ferry reaped; ru_maxrss is the largest of them (KiB).
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build/default")
    parser.add_argument("--sizes", default="10,100", help="line sizes in MB (2^20 bytes)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", default="view_size,greet")
    args = parser.parse_args()
    ferry = os.path.join(args.build, "bin", "ferry")
    print("| task | line | wall (best) | CPU, ferry + worker | peak RSS | MB/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            path = os.path.join(tmp, f"line{size}.jsonl")
            with open(path, "w") as f:
                f.write('"' + "x" * (size << 20) + '"\n')
            for task in args.tasks.split(","):
                best = min((run_once(ferry, args.build, task, path) for _ in range(args.runs)),
                           key=lambda r: r[0])
                wall, cpu, rss = best
                print(f"| {task} | {size} MB | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB | {size / wall:.0f} |",
                      flush=True)
            os.remove(path)


if __name__ == "__main__":
    main()
