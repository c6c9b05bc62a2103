#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Peak memory of the `ferry` command and of its worker on large JSON: a line of `ferry map` or a
result of `ferry run` of SIZE MB (twenty-sixth session: an 80 MB line peaked at 805 MB in the
command; twenty-seventh: 746 MB in the worker, which decoded the arguments through a document).

Cases, each one process with -j 1:
  map-bytes   `ferry map byte_count`: one line [[120,120,...]] (a std::vector<char> argument);
  map-string  `ferry map greet`: one line of x characters (a std::string argument; the result as long);
  map-echo    `ferry map echo_bytes`: one line [[120,...]], and a result line as long;
  run-result  `ferry run make_bytes N`: a result [120,120,...] of SIZE MB (an argument of
              `ferry run` is at most 128 KiB: the kernel's limit on one argument of a command).
The host's peak is its VmHWM (/proc/PID/status), read every few milliseconds until it exits; the
worker's is the largest VmHWM of the host's child processes (/proc/PID/task/*/children), read
likewise (a worker's last reading before it exits is its peak, VmHWM never falls). Prints a
Markdown table.

Usage: bench/cli_memory.py [--build build/default] [--size 80] [--cases map-bytes,run-result]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def vm_hwm(pid):
    """The VmHWM of `pid` in KiB, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += f.read().split()
    except OSError:
        pass
    return out


def host_peak(cmd, stdin_path):
    """Runs cmd with stdin from stdin_path, stdout to /dev/null; returns (wall s, host peak MiB,
    worker peak MiB)."""
    peak = worker = 0
    start = time.perf_counter()
    with open(stdin_path or os.devnull, "rb") as stdin, open(os.devnull, "wb") as null:
        child = subprocess.Popen(cmd, stdin=stdin, stdout=null, stderr=subprocess.PIPE)
        while child.poll() is None:
            peak = max(peak, vm_hwm(child.pid))
            for pid in children(child.pid):
                worker = max(worker, vm_hwm(pid))
            time.sleep(0.002)
        err = child.stderr.read().decode(errors="replace")
    wall = time.perf_counter() - start
    if child.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({child.returncode}): {err[:400]}")
    return wall, peak / 1024, worker / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build/default")
    parser.add_argument("--size", type=int, default=80, help="MB (2^20 bytes) of JSON")
    parser.add_argument("--cases", default="map-bytes,map-string,map-echo,run-result")
    args = parser.parse_args()
    size = args.size << 20
    base = [os.path.join(args.build, "bin", "ferry"), "--plugin-dir", os.path.join(args.build, "plugins"),
            "--worker", os.path.join(args.build, "bin", "ferry-worker")]
    print("| case | JSON | wall | host peak (VmHWM) | peak ÷ JSON | worker peak (VmHWM) | worker ÷ JSON |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        numbers = os.path.join(tmp, "bytes.jsonl")
        text = os.path.join(tmp, "string.jsonl")
        for case in args.cases.split(","):
            if case in ("map-bytes", "map-echo"):
                if not os.path.exists(numbers):
                    with open(numbers, "w") as f:
                        f.write("[[" + ",".join(["120"] * (size // 4)) + "]]\n")
                task = "byte_count" if case == "map-bytes" else "echo_bytes"
                cmd, stdin = base + ["map", "-j", "1", "--no-progress", task], numbers
            elif case == "map-string":
                with open(text, "w") as f:
                    f.write('"' + "x" * size + '"\n')
                cmd, stdin = base + ["map", "-j", "1", "--no-progress", "greet"], text
            elif case == "run-result":
                cmd, stdin = base + ["run", "make_bytes", str(size // 4)], None
            else:
                sys.exit(f"unknown case {case}")
            wall, peak, worker = host_peak(cmd, stdin)
            print(f"| {case} | {args.size} MB | {wall:.2f} s | {peak:.0f} MiB | {peak / args.size:.1f}× "
                  f"| {worker:.0f} MiB | {worker / args.size:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
