# SPDX-License-Identifier: BSD-3-Clause
# compare.py: runs ferry-bench and loky_bench.py back to back, prints one table, updates its parts of
# docs/benchmarks.md (between its markers; the rest of the file is kept).
#
#   python3 bench/compare.py build/default/bin/ferry-bench [--quick] [--python /usr/bin/python3]
#
# loky_bench.py runs under the system Python (Debian's python3-joblib); compare.py itself needs
# only the standard library. Figures drift between runs on this VM, so both sides are always
# measured in the same invocation and only compared with each other.
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SYSTEM_PYTHON = "/usr/bin/python3"

TIME, RATE, SIZE = "time", "rate", "size"

# label, unit, ferry metric, loky metric, kind, floor metric (ferry as a multiple of it)
ROWS = [
    ("cold start (process start → pool of 2 → 1st result)", "ms", "cold_start_ms", "cold_start_ms", TIME, None),
    ("round trip, median", "µs", "roundtrip_us_median", "roundtrip_us_median", TIME, "floor_pingpong_us"),
    ("round trip, p90", "µs", "roundtrip_us_p90", "roundtrip_us_p90", TIME, "floor_pingpong_us"),
    ("100k submits, then get all", "tasks/s", "submit_100k_tasks_per_s", "submit_100k_tasks_per_s", RATE, None),
    ("map, chunksize 1", "tasks/s", "map_chunk1_tasks_per_s", "map_chunk1_tasks_per_s", RATE, None),
    ("map, chunksize 1000", "tasks/s", "map_chunk1000_tasks_per_s", "map_chunk1000_tasks_per_s", RATE, None),
    ("1M-int vector argument (loky: cloudpickle)", "ms", "vector_1m_ms", "vector_1m_ms", TIME, None),
    ("1M-int vector argument (loky: pickle)", "ms", "vector_1m_ms", "vector_1m_pickle_ms", TIME, None),
    ("8 MB bytes argument", "ms", "bytes_8mb_ms", "bytes_8mb_ms", TIME, "floor_socketpair_8mb_ms"),
    ("80 MB bytes argument", "ms", "bytes_80mb_ms", "bytes_80mb_ms", TIME, "floor_socketpair_80mb_ms"),
    ("8 MB bytes argument, ferry::BytesView (zero-copy)", "ms", "bytes_view_8mb_ms", "bytes_8mb_ms", TIME, "floor_socketpair_8mb_ms"),
    ("80 MB bytes argument, ferry::BytesView (zero-copy)", "ms", "bytes_view_80mb_ms", "bytes_80mb_ms", TIME, "floor_socketpair_80mb_ms"),
    ("worker death → failure in host", "ms", "death_to_failure_ms", "death_to_failure_ms", TIME, None),
    ("crash → next result (pool of 2)", "ms", "crash_to_next_result_ms", "crash_to_next_result_ms", TIME, None),
    ("crash → next result from a respawned worker (ferry: pool of 1)", "ms", "crash_to_respawned_result_ms", "crash_to_next_result_ms", TIME, None),
    ("idle worker RSS (max)", "kB", "idle_worker_rss_kb", "idle_worker_rss_kb", SIZE, None),
]

# ferry-only figures: FERRY_WRAP (loky's cloudpickle has no compile step to compare with)
FERRY_ONLY = [
    ("FERRY_WRAP cold compile (first call, empty cache)", "ms", "wrap_cold_compile_ms"),
    ("FERRY_WRAP first submit, warm cache, over a registered task's", "µs", "wrap_first_submit_overhead_us"),
    ("FERRY_WRAP round trip over a registered task's", "µs", "wrap_submit_overhead_us"),
    ("100k submits by name (\"square\"), then get all", "tasks/s", "submit_100k_by_name_tasks_per_s"),
]

# ferry-only figures: a 2 GB argument, first and repeated submission in a fresh process (issue 10;
# loky_bench.py has no such case: pickling 2 GB takes minutes and three copies of it)
LARGE = [
    ("2 GB bytes argument, first submission in a process", "ms", "bytes_2gb_first_ms"),
    ("2 GB bytes argument, later submissions", "ms", "bytes_2gb_repeat_ms"),
]

FLOORS = [
    ("ping-pong, 8 bytes over a socketpair", "µs", "floor_pingpong_us"),
    ("socketpair bulk, 8 MB", "ms", "floor_socketpair_8mb_ms"),
    ("socketpair bulk, 80 MB", "ms", "floor_socketpair_80mb_ms"),
    ("memcpy, 8 MB", "ms", "floor_memcpy_8mb_ms"),
    ("memcpy, 80 MB", "ms", "floor_memcpy_80mb_ms"),
]

FLOOR_NAMES = {"floor_pingpong_us": "ping-pong", "floor_socketpair_8mb_ms": "socketpair bulk",
               "floor_socketpair_80mb_ms": "socketpair bulk"}

RSS_LIMIT_KB = 5 * 1024  # "< 5 MB", read as 5 MiB of VmRSS (kB in /proc are KiB)


def run_json_lines(cmd, timeout, label):
    """Runs cmd, streams its stderr, returns ({metric: record}, error or None)."""
    print(f"# running {label}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    records, error = {}, None
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout,
                              cwd=REPO_DIR)
        out = proc.stdout
        if proc.returncode != 0:
            error = f"{label} exited with status {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        error = f"{label} did not finish within {timeout} s (killed)"
    except OSError as e:
        out, error = "", f"{label} could not be started: {e}"
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
            records[rec["metric"]] = rec
        except (ValueError, KeyError, TypeError):
            print(f"# {label}: not a metric line: {line}", file=sys.stderr)
    if error:
        print(f"# {error}", file=sys.stderr, flush=True)
    return records, error


def value(records, key):
    rec = records.get(key) if key else None
    return None if rec is None else rec.get("value")


def fmt_value(v):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    return f"{r:.0f}×" if r >= 100 else f"{r:.1f}×" if r >= 10 else f"{r:.2f}×"


def ratio(kind, ferry, loky):
    """How many times better ferry is than loky (> 1: ferry better)."""
    if ferry is None or loky is None or ferry <= 0 or loky <= 0:
        return None
    return ferry / loky if kind == RATE else loky / ferry


def build_table(ferry, loky):
    rows = []
    for label, unit, fkey, lkey, kind, floor in ROWS:
        f, lv = value(ferry, fkey), value(loky, lkey)
        fl = value(ferry, floor)
        rows.append({
            "metric": label, "unit": unit, "ferry": fmt_value(f), "loky": fmt_value(lv),
            "ratio": fmt_ratio(ratio(kind, f, lv)),
            "better": "higher" if kind == RATE else "lower",
            "floor": (f"{fmt_ratio(f / fl)} {FLOOR_NAMES[floor]}" if f is not None and fl else "—"),
        })
    return rows


HEADERS = [("metric", "metric"), ("unit", "unit"), ("ferry", "ferry"), ("loky", "loky"),
           ("ratio", "ferry vs loky"), ("better", "better is"), ("floor", "ferry ÷ floor")]


def text_table(rows):
    widths = [max(len(title), *(len(r[key]) for r in rows)) for key, title in HEADERS]
    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line([t for _, t in HEADERS]), line(["-" * w for w in widths])]
    out += [line([r[key] for key, _ in HEADERS]) for r in rows]
    return "\n".join(out)


def markdown_table(rows):
    out = ["| " + " | ".join(t for _, t in HEADERS) + " |",
           "|" + "|".join("---" if k in ("metric", "unit", "better", "floor") else "---:"
                          for k, _ in HEADERS) + "|"]
    out += ["| " + " | ".join(r[key] for key, _ in HEADERS) + " |" for r in rows]
    return "\n".join(out)


def targets(ferry, loky):
    """[(target, met: True/False/None, figures)]; None: a figure is missing."""
    def times_faster(fkey, lkey, at_least):
        f, lv = value(ferry, fkey), value(loky, lkey)
        r = ratio(TIME, f, lv)
        if r is None:
            return None, f"not measured (ferry {fmt_value(f)}, loky {fmt_value(lv)})"
        return r >= at_least, f"{fmt_ratio(r)} (ferry {fmt_value(f)}, loky {fmt_value(lv)})"

    def rate_multiple(key, at_least):
        f, lv = value(ferry, key), value(loky, key)
        r = ratio(RATE, f, lv)
        if r is None:
            return None, f"not measured (ferry {fmt_value(f)}, loky {fmt_value(lv)})"
        return r >= at_least, f"{fmt_ratio(r)} (ferry {fmt_value(f)}/s, loky {fmt_value(lv)}/s)"

    def within_floor(key, floor_key, at_most):
        f, fl = value(ferry, key), value(ferry, floor_key)
        if f is None or not fl:
            return None, f"not measured (ferry {fmt_value(f)}, floor {fmt_value(fl)})"
        m = f / fl
        return m <= at_most, f"{fmt_ratio(m)} the floor (ferry {fmt_value(f)}, floor {fmt_value(fl)})"

    def at_most(key, limit, unit):
        f = value(ferry, key)
        if f is None:
            return None, "not measured"
        return f <= limit, f"{fmt_value(f)} {unit} (limit {limit:,} {unit})"

    rss = value(ferry, "idle_worker_rss_kb")
    rss_result = ((None, "not measured") if rss is None else
                  (rss < RSS_LIMIT_KB, f"{fmt_value(rss)} kB (limit {RSS_LIMIT_KB:,} kB)"))
    return [
        ("round trip (median) ≥ 4× faster than loky", *times_faster("roundtrip_us_median", "roundtrip_us_median", 4)),
        ("round trip (median) within 1.5× of the ping-pong floor", *within_floor("roundtrip_us_median", "floor_pingpong_us", 1.5)),
        ("100k submits ≥ 10× loky's rate", *rate_multiple("submit_100k_tasks_per_s", 10)),
        ("map chunksize 1000 ≥ 10× loky's rate", *rate_multiple("map_chunk1000_tasks_per_s", 10)),
        ("cold start ≥ 50× faster than loky", *times_faster("cold_start_ms", "cold_start_ms", 50)),
        ("1M vector ≥ 5× faster than loky with pickle", *times_faster("vector_1m_ms", "vector_1m_pickle_ms", 5)),
        ("death → failure ≥ 3× faster than loky", *times_faster("death_to_failure_ms", "death_to_failure_ms", 3)),
        ("crash → next result ≥ 20× faster than loky (ferry respawning its only worker)", *times_faster("crash_to_respawned_result_ms", "crash_to_next_result_ms", 20)),
        ("idle worker RSS < 5 MB", *rss_result),
        ("80 MB at least the socketpair bulk rate (time ≤ 1× floor), BytesView parameter", *within_floor("bytes_view_80mb_ms", "floor_socketpair_80mb_ms", 1.0)),
        ("80 MB at least the socketpair bulk rate (time ≤ 1× floor), std::vector<char> parameter", *within_floor("bytes_80mb_ms", "floor_socketpair_80mb_ms", 1.0)),
        ("FERRY_WRAP cold compile ≤ 1.5 s", *at_most("wrap_cold_compile_ms", 1500, "ms")),
        ("FERRY_WRAP cached submit ≤ a registered task's + 100 µs (first in a process)", *at_most("wrap_first_submit_overhead_us", 100, "µs")),
        ("FERRY_WRAP cached submit ≤ a registered task's + 100 µs (later calls)", *at_most("wrap_submit_overhead_us", 100, "µs")),
    ]


def target_word(met):
    return "not measured (missed)" if met is None else "met" if met else "**MISSED**"


# ---- machine description -------------------------------------------------------------------------

def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cmake_cache(ferry_bench):
    """The CMakeCache.txt of the build tree that holds ferry-bench, as a dict."""
    for d in Path(ferry_bench).resolve().parents:
        cache = d / "CMakeCache.txt"
        if cache.is_file():
            entries = {}
            for line in cache.read_text(errors="replace").splitlines():
                if "=" in line and ":" in line.split("=", 1)[0] and not line.startswith(("//", "#")):
                    key, val = line.split("=", 1)
                    entries[key.split(":", 1)[0]] = val
            return entries
    return {}


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpu_busy(seconds):
    """Fraction of all CPUs' time spent not idle over `seconds`, from /proc/stat (None if unknown)."""
    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (i1 - i0) / (t1 - t0) if t1 > t0 else None


def machine(ferry_bench, python):
    cache = cmake_cache(ferry_bench)
    compiler = cache.get("CMAKE_CXX_COMPILER", "c++")
    git = first_line(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cores": f"{os.cpu_count()} (online vCPUs)",
        "model name": cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "compiler": f"{first_line([compiler, '--version'])} ({compiler}, "
                    f"CMAKE_BUILD_TYPE={cache.get('CMAKE_BUILD_TYPE', '?')})",
        "python / loky": first_line([python, "-c",
                                     "import sys; from joblib.externals import loky; "
                                     "print(sys.executable, sys.version.split()[0], 'loky', loky.__version__)"]),
        "ferry commit": git + ("" if dirty in ("", "unknown") else " + uncommitted changes"),
    }


# ---- report --------------------------------------------------------------------------------------

def notes_section(ferry, loky):
    keys = []
    for _, _, fkey, lkey, _, _ in ROWS:
        for k in (fkey, lkey):
            if k not in keys:
                keys.append(k)
    out = []
    for k in keys:
        for side, recs in (("ferry", ferry), ("loky", loky)):
            if k in recs:
                out.append(f"- `{k}` ({side}): {recs[k].get('note', '')}")
    return "\n".join(out)


# The parts of docs/benchmarks.md this script writes are marked, each between
# <!-- compare.py:begin NAME --> and <!-- compare.py:end NAME -->; a run replaces what is between
# the markers of each part and keeps everything else of the file as it is: the sections other
# scripts write (mpi_compare.py) or people keep by hand (before/after tables, notes on a part).
BEGIN, END = "<!-- compare.py:begin {} -->", "<!-- compare.py:end {} -->"


def generated_parts(command, info, rows, ferry, loky, target_rows, errors, quick):
    """The document as a list of ("part", name, lines) and ("text", None, lines): parts are
    rewritten by every run, text only goes into a file that does not exist yet."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def table(specs):
        out = ["| figure | unit | value | how |", "|---|---|---:|---|"]
        for label, unit, key in specs:
            rec = ferry.get(key)
            out.append(f"| {label} | {unit} | {fmt_value(value(ferry, key))} | "
                       f"{rec.get('note', '') if rec else 'not measured'} |")
        return out

    met = sum(1 for _, m, _ in target_rows if m)
    title = [
        "# ferry vs loky: benchmarks",
        "",
        "Generated by `bench/compare.py` (`make bench`): it rewrites the parts between its "
        "`compare.py:begin`/`end` markers and keeps the rest of this file. ferry-bench and "
        "loky_bench.py ran back to back in the same invocation: figures drift between runs on this "
        "VM (a cross-vCPU wake-up costs ~75 µs, a same-vCPU one ~3 µs, and the scheduler picks per "
        "process pair), so only compare numbers of one run with each other.",
    ]
    if quick:
        title += ["", "**This is a `--quick` smoke run: fewer repetitions and 10k instead of 100k tasks "
                  "for submit/map chunksize 1. Do not quote it.**"]
    targets_part = [
        "## Targets",
        "",
        f"{met} of {len(target_rows)} met.",
        "",
        "| target | result | figures |",
        "|---|---|---|",
        *[f"| {t} | {target_word(m)} | {d} |" for t, m, d in target_rows],
    ]
    missed = [t for t, m, _ in target_rows if not m]
    if missed:
        targets_part += ["", "Missed in this run: " + "; ".join(missed) + "."]
    analysis = BENCH_DIR / "analysis.md"
    analysis_part = analysis.read_text().rstrip().splitlines() if missed and analysis.exists() else []
    errors_part = ["## Errors in this run", "", *[f"- {e}" for e in errors]] if errors else []
    return [
        ("part", "title", title),
        ("text", None, [""]),
        ("part", "machine", ["## Machine and run", "", *[f"- {k}: {v}" for k, v in info.items()],
                             f"- command: `{command}`", f"- date: {date}"]),
        ("text", None, [""]),
        ("part", "results", [
            "## Results",
            "",
            "Pool of 2 workers on both sides. \"ferry vs loky\" is loky/ferry for times and sizes, "
            "ferry/loky for rates: above 1× ferry is better. \"ferry ÷ floor\" is ferry's figure over "
            "the hardware floor ferry-bench measured in the same run.",
            "",
            markdown_table(rows),
        ]),
        ("text", None, [""]),
        ("part", "wrap", ["### FERRY_WRAP (ferry only: loky's cloudpickle has no compile step)", "",
                          *table(FERRY_ONLY)]),
        ("text", None, ["", "### Large arguments (ferry only: a 2 GB `std::vector<char>`, fresh process)", ""]),
        ("part", "large", table(LARGE)),
        ("text", None, [""]),
        ("part", "floors", ["### Floors (measured by ferry-bench, C++, same run)", "", *table(FLOORS)]),
        ("text", None, [""]),
        ("part", "targets", targets_part),
        ("text", None, [""]),
        ("part", "analysis", analysis_part),
        ("text", None, [""]),
        ("part", "errors", errors_part),
        ("text", None, [""]),
        ("part", "notes", ["## How each figure was taken", "", notes_section(ferry, loky)]),
    ]


def render_fresh(parts):
    lines = []
    for kind, name, body in parts:
        if kind == "part":
            lines += [BEGIN.format(name), *body, END.format(name)]
        else:
            lines += body
    return lines


def split_marked(lines):
    """An existing file as [("text", None, lines) | ("part", name, lines)]; ValueError when its
    markers do not pair up."""
    out, text, i = [], [], 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("<!-- compare.py:begin ") and line.endswith(" -->"):
            name = line[len("<!-- compare.py:begin "):-len(" -->")]
            try:
                j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == END.format(name))
            except StopIteration:
                raise ValueError(f"{BEGIN.format(name)} has no {END.format(name)}") from None
            if text:
                out.append(("text", None, text))
                text = []
            out.append(("part", name, lines[i + 1:j]))
            i = j + 1
            continue
        if line.startswith("<!-- compare.py:end "):
            raise ValueError(f"{line} without its begin marker")
        text.append(lines[i])
        i += 1
    if text:
        out.append(("text", None, text))
    return out


def merge(old_lines, parts):
    """The old file with each marked part replaced by its new content; a part it lacks goes after
    the part that precedes it in a fresh file (or first)."""
    old = split_marked(old_lines)
    if not any(kind == "part" for kind, _, _ in old):
        # A file from before the markers: the fresh document, then the old file's own sections
        # (its "## " sections whose heading the fresh document does not have).
        fresh = render_fresh(parts)
        headings = {l for l in fresh if l.startswith("## ")}
        kept, keep = [], False
        for l in old_lines:
            if l.startswith("## "):
                keep = l not in headings
            if keep:
                kept.append(l)
        return fresh + ([""] + kept if kept else [])
    new = {name: body for kind, name, body in parts if kind == "part"}
    merged = [(kind, name, new.get(name, body) if kind == "part" else body) for kind, name, body in old]
    present = {name for kind, name, _ in old if kind == "part"}
    previous = None
    for kind, name, body in parts:
        if kind != "part":
            continue
        if name not in present:
            at = 0
            if previous is not None:
                at = next(i for i, (k, n, _) in enumerate(merged) if k == "part" and n == previous) + 1
            merged[at:at] = [("part", name, body)]
            present.add(name)
        previous = name
    return render_fresh(merged)


def write_markdown(path, command, info, rows, ferry, loky, target_rows, errors, quick):
    parts = generated_parts(command, info, rows, ferry, loky, target_rows, errors, quick)
    p = Path(path)
    if p.exists():
        lines = merge(p.read_text().splitlines(), parts)
    else:
        lines = render_fresh(parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines).rstrip("\n") + "\n")


def main():
    parser = argparse.ArgumentParser(description="Run ferry-bench and loky_bench.py; compare.")
    parser.add_argument("ferry_bench", help="path of the ferry-bench executable")
    parser.add_argument("--quick", action="store_true", help="pass --quick to both (smoke run)")
    parser.add_argument("--python", default=SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON)
                        else sys.executable, help="Python with joblib's loky (default: %(default)s)")
    parser.add_argument("--output", default=str(REPO_DIR / "docs" / "benchmarks.md"),
                        help="markdown report to write (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per program")
    args = parser.parse_args()

    load_before = loadavg()
    busy = cpu_busy(1.0)
    if busy is not None and busy > 0.2:
        print(f"# warning: the CPUs were {busy:.0%} busy in the second before the run: something "
              "else is running, and it will show in the figures", file=sys.stderr, flush=True)
    quick = ["--quick"] if args.quick else []
    ferry_bench = os.path.abspath(args.ferry_bench)
    ferry, ferry_err = run_json_lines([ferry_bench, *quick], args.timeout, "ferry-bench")
    loky, loky_err = run_json_lines([args.python, str(BENCH_DIR / "loky_bench.py"), *quick],
                                    args.timeout, "loky_bench.py")
    errors = [e for e in (ferry_err, loky_err) if e]
    for side, recs in (("ferry", ferry), ("loky", loky)):
        for k, rec in recs.items():
            if rec.get("value") is None:
                errors.append(f"{side} {k}: {rec.get('note', '')}")

    rows = build_table(ferry, loky)
    target_rows = targets(ferry, loky)
    print(text_table(rows))
    print()
    for label, unit, key in FERRY_ONLY + LARGE:
        print(f"ferry only: {label}: {fmt_value(value(ferry, key))} {unit}")
    for label, unit, key in FLOORS:
        print(f"floor: {label}: {fmt_value(value(ferry, key))} {unit}")
    print()
    for t, m, d in target_rows:
        print(f"target: {t}: {target_word(m).strip('*')} — {d}")
    for e in errors:
        print(f"error: {e}")

    command = shlex.join([sys.executable, *sys.argv])
    if os.environ.get("MAKELEVEL"):
        command = f"make bench → {command}"
    info = machine(ferry_bench, args.python)
    info["other load"] = (f"CPUs {'unknown' if busy is None else f'{busy:.0%}'} busy in the second "
                          f"before the run; load average {load_before} before it (decaying from "
                          "earlier work), " f"{loadavg()} after it (includes this run)")
    write_markdown(args.output, command, info, rows, ferry, loky,
                   target_rows, errors, args.quick)
    print(f"\nwrote {args.output}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
