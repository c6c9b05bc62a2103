#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Peak memory of `ferry report` on traces crafted to be large where the report bounds what it keeps
(docs/design.md §19, docs/benchmarks.md "ferry report on large traces").

Traces (each written once into --dir, then reused):
  texts   N failed calls (default 100,000) on 8 workers, each with a distinct message of 1.9 KB and
          a first input: the page holds 16 MiB of the calls' texts, and the summary kept the texts
          of every call it kept (up to twice the page's 200,000), 190 MB here;
  names   N calls of as many task names of 212 bytes on 8 workers: 2,000 names listed, the others
          folded into one row.
Each is run through `ferry report TRACE -o PAGE` (stdout to /dev/null); its peak is the VmHWM
(/proc/PID/status) read every few milliseconds until it exits, and the page's size is printed with
it. A second binary (--before) is run on the same traces for a before/after table.

Usage: bench/report_memory.py [--ferry build/default/bin/ferry] [--before OLD_FERRY]
                              [--calls 100000] [--cases texts,names] [--dir /tmp/ferry-report-bench]
"""
import argparse
import os
import subprocess
import sys
import time

from cli_memory import vm_hwm  # the same peak reading, beside this script


def write_texts(path, calls):
    with open(path, "w") as out:
        out.write("[\n")
        out.write('{"name":"process_name","ph":"M","ts":0,"pid":1,"tid":0,"args":{"name":"ferry executor"}},\n')
        for i in range(calls):
            # 1.9 KB, distinct: the call's number then filler.
            message = ("call %d failed: " % i) + "m" * 1900
            out.write('{"name":"square","cat":"task","ph":"X","ts":%d,"dur":3,"pid":1,"tid":%d,'
                      '"args":{"call":%d,"items":1,"first_input":%d,"error":"TaskError","message":"%s"}},\n'
                      % (5 * i, 1 + i % 8, i, i, message))
        out.write("]\n")


def write_names(path, calls):
    tail = "n" * 199
    with open(path, "w") as out:
        out.write("[\n")
        for i in range(calls):
            out.write('{"name":"task_%07d_%s","cat":"task","ph":"X","ts":%d,"dur":3,"pid":1,"tid":%d,'
                      '"args":{"call":%d}},\n' % (i, tail, 5 * i, 1 + i % 8, i))
        out.write("]\n")


def run(ferry, trace, page):
    """(wall s, peak MiB, page MB, first stdout line)"""
    peak = 0
    start = time.perf_counter()
    child = subprocess.Popen([ferry, "report", trace, "-o", page], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while child.poll() is None:
        peak = max(peak, vm_hwm(child.pid))
        time.sleep(0.002)
    out, err = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        sys.exit(f"{ferry} report {trace} failed ({child.returncode}): {err.decode(errors='replace')[:400]}")
    return wall, peak / 1024, os.path.getsize(page) / 1e6, out.decode(errors="replace").strip().splitlines()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferry", default="build/default/bin/ferry")
    parser.add_argument("--before", help="another ferry binary, run on the same traces")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--cases", default="texts,names")
    parser.add_argument("--dir", default="/tmp/ferry-report-bench")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    writers = {"texts": write_texts, "names": write_names}
    binaries = [("after", args.ferry)] + ([("before", args.before)] if args.before else [])
    print("| trace | size | binary | wall | peak (VmHWM) | page |")
    print("|---|---:|---|---:|---:|---:|")
    for case in args.cases.split(","):
        trace = os.path.join(args.dir, f"{case}-{args.calls}.json")
        if not os.path.exists(trace):
            writers[case](trace + ".tmp", args.calls)
            os.rename(trace + ".tmp", trace)
        size = os.path.getsize(trace) / 1e6
        for label, ferry in binaries:
            wall, peak, page, lines = run(ferry, trace, os.path.join(args.dir, f"{case}.html"))
            print(f"| {case}: {args.calls:,} calls | {size:.0f} MB | {label} | {wall:.2f} s | {peak:.0f} MiB | {page:.1f} MB |")
            for line in lines:
                print(f"<!-- {label}: {line} -->", file=sys.stderr)


if __name__ == "__main__":
    main()
