# SPDX-License-Identifier: BSD-3-Clause
# before_after.py: two builds of ferry-bench side by side, for a change that must not cost speed.
#
#   python3 bench/before_after.py BEFORE/bin/ferry-bench AFTER/bin/ferry-bench [--rounds 3]
#   python3 bench/before_after.py build/default/bin/ferry-bench \
#       "build/default/bin/ferry-bench --contained"        (containment off vs on)
#
# Each side is a command line (split like a shell would).
# The two programs run alternately, each metric `--rounds` times per side (before, after, before,
# after, ...), so that drift of the shared VM touches both sides alike; the table shows each
# side's median and its range, and after/before. Prints a Markdown table on stdout.
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

METRICS = [
    ("cold start (process start → pool of 2 → 1st result)", "cold_start_ms", "lower"),
    ("round trip, median", "roundtrip_us_median", "lower"),
    ("round trip, p90", "roundtrip_us_p90", "lower"),
    ("100k submits, then get all", "submit_100k_tasks_per_s", "higher"),
    ("map, chunksize 1", "map_chunk1_tasks_per_s", "higher"),
    ("map, chunksize 1000", "map_chunk1000_tasks_per_s", "higher"),
    ("imap, 100k inputs, default chunksize", "imap_default_tasks_per_s", "higher"),
    ("imap, 10k inputs, default chunksize", "imap_default_10k_tasks_per_s", "higher"),
    ("imap, first result of 200 inputs of 5 ms", "imap_first_result_ms", "lower"),
    ("80 MB bytes argument", "bytes_80mb_ms", "lower"),
    ("worker start (spawn → handshake)", "worker_spawn_ms", "lower"),
    ("worker death → failure in host", "death_to_failure_ms", "lower"),
    ("crash → next result (pool of 2)", "crash_to_next_result_ms", "lower"),
    ("crash → next result from a respawned worker (pool of 1)", "crash_to_respawned_result_ms", "lower"),
]


def run(program, metrics, timeout):
    args = shlex.split(program)
    for m in metrics:
        args += ["--only", m]
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True).stdout
    values, units = {}, {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            row = json.loads(line)
            values[row["metric"]] = float(row["value"])
            units[row["metric"]] = row.get("unit", "")
    return values, units


def fmt(x):
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--metric", action="append", default=[],
                        help="only this metric (repeatable); default: all of the table")
    args = parser.parse_args()
    names = [m for _, m, _ in METRICS if not args.metric or m in args.metric]
    samples = {side: {m: [] for m in names} for side in ("before", "after")}
    units = {}
    for r in range(args.rounds):
        for side, program in (("before", args.before), ("after", args.after)):
            print(f"round {r + 1}/{args.rounds}: {side}", file=sys.stderr)
            values, u = run(program, names, args.timeout)
            units.update(u)
            for m in names:
                if m in values:
                    samples[side][m].append(values[m])
    print(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}\n")
    print("| metric | unit | before (median, range) | after (median, range) | after ÷ before | better is |")
    print("|---|---|---:|---:|---:|---|")
    for label, m, better in METRICS:
        if m not in names:
            continue
        b, a = samples["before"][m], samples["after"][m]
        if not b or not a:
            continue
        mb, ma = statistics.median(b), statistics.median(a)
        print(f"| {label} | {units.get(m, '')} | {fmt(mb)} ({fmt(min(b))}–{fmt(max(b))}) "
              f"| {fmt(ma)} ({fmt(min(a))}–{fmt(max(a))}) | {ma / mb:.2f} | {better} |")


if __name__ == "__main__":
    main()
