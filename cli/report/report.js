// The ferry report's script (cli/report/report.html): draws the figures of the "trace-data" JSON.
//
// The data came from a trace file that may be hostile, so it is only ever text: every string
// reaches the page through textContent, setAttribute or a <title>'s text, never through markup
// (no innerHTML anywhere in this file). Its strings hold no C1, bidirectional or line-separator
// control: cli/report_html.cpp writes each as text, a backslash, "u" and its four hex digits (the
// terminal's list, detail::escaped_on_terminal), so that none reorders the report's own words.
//
// The data (written by cli/report_html.cpp; -1 or null for "absent"):
//   file, generator, process, meta: [[name, value]], notes: [[text, "bad"|"warn"]], begin, end (µs)
//   strings: texts the arrays below refer to by index (errors, messages, reasons, first inputs)
//   tasks: [{name, calls, items, failed, never_ran, p50, p90, max, wait_n, wait_p50, wait_max}]
//     (the first ones by name; then, with other: true and no name, the other task names together)
//   tracks: [{tid, label, start, end, end_kind, reason, error, busy, life_begin, life_end, slices, failed}]
//   slices: [[ts, dur, track, task, call, items, wait, arg_bytes, result_bytes, error, message, first_input]]
//   marks: [[ts, track, kind ("start" | "exit" | "crash"), reason, error]]
//   failures: [[ts, call, task, worker label (null: never ran), error, message, task name (a text:
//     when its task has no row of its own, null otherwise)]]
//   counters: {names, points: [[ts, value...]], events, reduced}
//   stats: {source: "trace" | "computed", rows: [[name, value]]}
//   slices_total, tracks_total, failures_total: how many there were before the caps
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("trace-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var ROW = 26, AXIS = 26, PAD = 12;
  // A trace with very many task names (a hostile one) must not freeze the page.
  var MAX_LEGEND = 40, MAX_TASK_ROWS = 2000;

  // ---- helpers ----------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function str(i) { return i === null || i === undefined || i < 0 ? "" : data.strings[i]; }
  function present(v) { return v !== null && v !== undefined && v >= 0; }

  function duration(us) {
    if (!present(us)) return "";
    if (us < 1) return us.toFixed(2) + " µs";
    if (us < 1000) return us.toFixed(us < 10 ? 1 : 0) + " µs";
    if (us < 1e6) return (us / 1e3).toPrecision(3) + " ms";
    if (us < 60e6) return (us / 1e6).toFixed(2) + " s";
    var s = us / 1e6, m = Math.floor(s / 60);
    return m + " min " + Math.round(s - 60 * m) + " s";
  }
  function bytes(n) {
    if (!present(n)) return "";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; ++u; }
    return (u === 0 ? String(n) : n.toFixed(1)) + " " + units[u];
  }
  function count(n) { return Number(n).toLocaleString("en-US"); }

  // Colours by task (tasks are sorted by name, so a task keeps its colour between reports of the
  // same program); after the palette, hues spread by the golden angle.
  var PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#72b7b2", "#eeca3b", "#9d755d",
                 "#ff9da6", "#79706e", "#bab0ac", "#83bcb6", "#d67195"];
  var OTHER = "(one of the other task names)";
  function other(task) { return data.tasks[task].other === true; }
  function taskName(task) { return other(task) ? OTHER : data.tasks[task].name; }
  function colour(task) {
    if (other(task)) return "#9aa1ad";
    if (task < PALETTE.length) return PALETTE[task];
    return "hsl(" + Math.round((task * 137.508) % 360) + ", 55%, 58%)";
  }

  // ---- header ----------------------------------------------------------------------------------

  function header() {
    document.title = "ferry report: " + data.file;
    document.getElementById("subtitle").textContent =
      data.file + (data.process ? " · " + data.process : "") + " · " + data.generator;
    var meta = document.getElementById("meta");
    var rows = [["calls drawn", count(data.slices.length) + " of " + count(data.slices_total)],
                ["span", duration(data.end - data.begin)],
                ["workers", count(data.tracks_total)]].concat(data.meta);
    rows.forEach(function (r) {
      var d = el("div"), value = typeof r[1] === "string" ? r[1] : JSON.stringify(r[1]);
      // The header's times (started_unix_us, and run_started_unix_us of FERRY_TRACE's files) as dates.
      var time = /^(|run_)started_unix_us$/.test(r[0]);
      if (time && typeof r[1] === "number" && isFinite(new Date(r[1] / 1000).getTime()))
        value = new Date(r[1] / 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
      d.appendChild(el("dt", null, time ? r[0].replace(/_unix_us$/, "").replace("_", " ") : r[0]));
      d.appendChild(el("dd", null, value));
      meta.appendChild(d);
    });
    var notes = document.getElementById("notes");
    data.notes.forEach(function (n) { notes.appendChild(el("li", { "class": n[1] }, n[0])); });
  }

  // ---- the task stream --------------------------------------------------------------------------

  var zoom = 1;
  var tip = document.getElementById("tip");

  function legend() {
    var box = document.getElementById("legend");
    var named = data.tasks.filter(function (t) { return !t.other; });
    named.slice(0, MAX_LEGEND).forEach(function (t, i) {
      var item = el("span", { "class": "legend-item", "data-legend-task": t.name });
      var sw = el("span", { "class": "swatch" });
      sw.style.background = colour(i);
      item.appendChild(sw);
      item.appendChild(el("span", { "class": "name" }, t.name));
      box.appendChild(item);
    });
    if (named.length > MAX_LEGEND)
      box.appendChild(el("span", { "class": "legend-item" }, "… and " + count(named.length - MAX_LEGEND) + " more tasks"));
    if (named.length < data.tasks.length) {
      var item = el("span", { "class": "legend-item" });
      var sw = el("span", { "class": "swatch" });
      sw.style.background = colour(data.tasks.length - 1);
      item.appendChild(sw);
      item.appendChild(el("span", { "class": "name" }, "other task names"));
      box.appendChild(item);
    }
    var marks = [["failed call", "failed"], ["worker start", "start"], ["worker exit", "exit"],
                 ["worker crash", "crash"]];
    marks.forEach(function (m) {
      var item = el("span", { "class": "legend-item" });
      var s = svg("svg", { width: 18, height: 16, viewBox: "0 0 18 16" });
      if (m[1] === "failed") {
        s.appendChild(svg("rect", { x: 1, y: 2, width: 16, height: 12, fill: "#bab0ac",
                                    stroke: "#c8102e", "stroke-width": 2 }));
        s.appendChild(svg("rect", { x: 1, y: 2, width: 16, height: 12, fill: "url(#hatch)" }));
      } else {
        s.appendChild(markShape(m[1], 9, 2, 12));
      }
      item.appendChild(s);
      item.appendChild(el("span", null, m[0]));
      box.appendChild(item);
    });
  }

  // The hatch of failed slices, once for the page (an id is global to the document, so every
  // inline SVG can use it).
  function patterns() {
    var s = svg("svg", { "class": "defs", width: 0, height: 0, "aria-hidden": "true" });
    var d = svg("defs");
    var p = svg("pattern", { id: "hatch", patternUnits: "userSpaceOnUse", width: 6, height: 6,
                             patternTransform: "rotate(45)" });
    p.appendChild(svg("rect", { width: 3, height: 6, fill: "rgba(200, 16, 46, 0.55)" }));
    d.appendChild(p);
    s.appendChild(d);
    document.body.appendChild(s);
  }

  // A start, exit or crash mark at x, in a row from y to y + h.
  function markShape(kind, x, y, h) {
    var mid = y + h / 2;
    if (kind === "start")
      return svg("path", { d: "M" + (x - 3) + " " + (mid - 6) + " L" + (x + 5) + " " + mid + " L" + (x - 3) + " " + (mid + 6) + " Z",
                           fill: "#2e7d32" });
    if (kind === "exit")
      return svg("path", { d: "M" + x + " " + y + " V" + (y + h) + " M" + (x - 4) + " " + (y + h) + " H" + (x + 4),
                           stroke: "#5d6677", "stroke-width": 2, fill: "none" });
    return svg("path", { d: "M" + (x - 5) + " " + (mid - 5) + " L" + (x + 5) + " " + (mid + 5) + " M" + (x + 5) + " " + (mid - 5) + " L" + (x - 5) + " " + (mid + 5),
                         stroke: "#c8102e", "stroke-width": 2.5, fill: "none" });
  }

  // Tick step: 1, 2 or 5 times a power of ten, about every 110 px.
  function tickStep(span, width) {
    var raw = span / Math.max(1, width / 110), p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  // A tick's label in the unit of the step: "0", "250 µs", "1.5 ms", "12 s".
  function tickLabel(t, step) {
    if (t === 0) return "0";
    var unit = step >= 1e6 ? [1e6, " s"] : step >= 1e3 ? [1e3, " ms"] : [1, " µs"];
    var v = t / unit[0];
    return String(Number(v.toFixed(3))) + unit[1];
  }

  function axis(s, x0, scale, span, width, height) {
    var step = tickStep(span, width);
    for (var i = 0; i * step <= span * (1 + 1e-9); ++i) {
      var x = x0 + i * step * scale;
      s.appendChild(svg("line", { x1: x, x2: x, y1: AXIS - 6, y2: height, stroke: "#eceef2" }));
      if (x > x0 + width - 40) continue;  // no room for its label at the right edge
      var label = svg("text", { x: x + 3, y: AXIS - 10 });
      label.textContent = tickLabel(i * step, step);
      s.appendChild(label);
    }
  }

  function timeline() {
    var labels = document.getElementById("track-labels"), stream = document.getElementById("stream");
    labels.textContent = "";
    stream.textContent = "";
    labels.appendChild(el("div", { "class": "axis-gap" }));
    data.tracks.forEach(function (t) {
      var d = el("div", { "class": t.end_kind === "crash" ? "crashed" : "", title: t.label }, t.label);
      labels.appendChild(d);
    });

    var span = Math.max(data.end - data.begin, 1);
    var width = Math.max(600, stream.clientWidth || 900) * zoom;
    var scale = (width - 2 * PAD) / span;
    var height = AXIS + ROW * data.tracks.length + 4;
    var s = svg("svg", { width: width, height: height, id: "stream-svg" });
    axis(s, PAD, scale, span, width - 2 * PAD, height);
    function x(ts) { return PAD + (ts - data.begin) * scale; }

    // The lifetime of each worker, behind its slices.
    data.tracks.forEach(function (t, row) {
      if (!present(t.life_begin)) return;
      var y = AXIS + row * ROW;
      s.appendChild(svg("rect", { x: x(t.life_begin), y: y + 2, height: ROW - 4, fill: "#eef1f6",
                                  width: Math.max(1, (t.life_end - t.life_begin) * scale) }));
    });

    var slices = svg("g", { id: "slices" });
    data.slices.forEach(function (sl, i) {
      var y = AXIS + sl[2] * ROW + 4;
      var attrs = { x: x(sl[0]), y: y, width: Math.max(1, sl[1] * scale), height: ROW - 8,
                    fill: colour(sl[3]), "class": "slice", "data-index": i, "data-call": sl[4],
                    "data-task": taskName(sl[3]) };
      if (present(sl[9])) {
        attrs["class"] = "slice failed";
        attrs["data-error"] = str(sl[9]);
        attrs.stroke = "#c8102e";
        attrs["stroke-width"] = 2;
      }
      slices.appendChild(svg("rect", attrs));
      if (present(sl[9]))
        slices.appendChild(svg("rect", { x: attrs.x, y: y, width: attrs.width, height: ROW - 8,
                                         fill: "url(#hatch)", "pointer-events": "none" }));
    });
    s.appendChild(slices);

    data.marks.forEach(function (m) {
      var g = svg("g", { "data-mark": m[2] });
      g.appendChild(markShape(m[2], x(m[0]), AXIS + m[1] * ROW + 2, ROW - 4));
      var title = svg("title");
      var what = "worker " + m[2] + " at " + duration(m[0] - data.begin) + "\n" + data.tracks[m[1]].label;
      if (str(m[3])) what += "\nreason: " + str(m[3]);
      if (str(m[4])) what += "\nerror: " + str(m[4]);
      title.textContent = what;
      g.appendChild(title);
      s.appendChild(g);
    });

    s.addEventListener("mousemove", hover);
    s.addEventListener("mouseleave", function () { tip.hidden = true; });
    stream.appendChild(s);
    document.getElementById("zoom-level").textContent = zoom === 1 ? "whole trace" : "×" + zoom;
    var note = [];
    if (data.slices.length < data.slices_total)
      note.push("Drawn: the first " + count(data.slices.length) + " of " + count(data.slices_total) +
                " calls by start time; the tables count all of them.");
    if (data.tracks.length < data.tracks_total)
      note.push("Drawn: the first " + count(data.tracks.length) + " of " + count(data.tracks_total) + " workers.");
    document.getElementById("timeline-note").textContent = note.join(" ");
  }

  function hover(ev) {
    var target = ev.target;
    var index = target && target.getAttribute ? target.getAttribute("data-index") : null;
    if (index === null) { tip.hidden = true; return; }
    var sl = data.slices[Number(index)];
    var lines = [taskName(sl[3]),
                 "call " + sl[4] + (sl[5] !== 1 ? " · " + count(sl[5]) + " items" : "") +
                   (str(sl[11]) ? " · first input " + str(sl[11]) : ""),
                 data.tracks[sl[2]].label,
                 "started at " + duration(sl[0] - data.begin) + ", ran " + duration(sl[1]),
                 present(sl[6]) ? "queue wait " + duration(sl[6]) : "queue wait: not in the trace"];
    if (present(sl[7]) || present(sl[8]))
      lines.push("arguments " + (bytes(sl[7]) || "?") + " · result " + (bytes(sl[8]) || "?"));
    if (present(sl[9])) lines.push("FAILED: " + str(sl[9]) + (str(sl[10]) ? ": " + str(sl[10]) : ""));
    tip.textContent = lines.join("\n");
    tip.hidden = false;
    var left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    var top = ev.clientY + 16;
    if (top + tip.offsetHeight > window.innerHeight - 8) top = ev.clientY - tip.offsetHeight - 10;
    tip.style.left = Math.max(4, left) + "px";
    tip.style.top = Math.max(4, top) + "px";
  }

  function controls() {
    document.getElementById("zoom-in").addEventListener("click", function () { zoom = Math.min(zoom * 2, 1024); timeline(); });
    document.getElementById("zoom-out").addEventListener("click", function () { zoom = Math.max(zoom / 2, 1); timeline(); });
    document.getElementById("zoom-fit").addEventListener("click", function () { zoom = 1; timeline(); });
  }

  // ---- counters ---------------------------------------------------------------------------------

  function counters() {
    var c = data.counters, box = document.getElementById("counters");
    if (!c.points.length) {
      box.appendChild(el("p", { "class": "hint" }, "No counter events in the trace."));
      return;
    }
    var colours = ["#f58518", "#4c78a8", "#54a24b", "#b279a2", "#e45756", "#72b7b2"];
    var keys = el("div");
    c.names.forEach(function (n, k) {
      var key = el("span", { "class": "counter-key" });
      var sw = el("span", { "class": "swatch" });
      sw.style.background = colours[k % colours.length];
      key.appendChild(sw);
      key.appendChild(el("span", null, n));
      keys.appendChild(key);
    });
    box.appendChild(keys);
    var width = Math.max(600, box.clientWidth || 900), height = 130, top = 10, bottom = 20;
    var span = Math.max(data.end - data.begin, 1), scale = (width - 2 * PAD - 40) / span;
    var max = 1;
    c.points.forEach(function (p) { for (var k = 1; k < p.length; ++k) max = Math.max(max, p[k]); });
    var s = svg("svg", { width: width, height: height, id: "counters-svg" });
    var y = function (v) { return top + (height - top - bottom) * (1 - v / max); };
    s.appendChild(svg("line", { x1: PAD + 40, x2: width - PAD, y1: y(0), y2: y(0), stroke: "#d8dce3" }));
    [0, max].forEach(function (v) {
      var t = svg("text", { x: PAD + 34, y: y(v) + 4, "text-anchor": "end" });
      t.textContent = String(Math.round(v));
      s.appendChild(t);
    });
    c.names.forEach(function (n, k) {
      var pts = [], prev = null;
      c.points.forEach(function (p) {
        var px = PAD + 40 + (p[0] - data.begin) * scale;
        if (prev !== null) pts.push(px + "," + y(prev));  // a step: hold the value until it changes
        pts.push(px + "," + y(p[k + 1]));
        prev = p[k + 1];
      });
      pts.push((width - PAD) + "," + y(prev));
      s.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", "stroke-width": 1.5,
                                      stroke: colours[k % colours.length], "data-counter": n }));
    });
    box.appendChild(s);
    if (c.reduced)
      box.appendChild(el("p", { "class": "hint" }, count(c.events) + " counter events, drawn as the maximum of each series over " +
                                                   count(c.points.length) + " time buckets."));
  }

  // ---- tables -----------------------------------------------------------------------------------

  function table(id, head, rows) {
    var t = document.getElementById(id);
    var tr = el("tr");
    // A heading given as [text, "text"] is over a column of text: aligned left like it.
    head.forEach(function (h) { tr.appendChild(Array.isArray(h) ? el("th", { "class": h[1] }, h[0]) : el("th", null, h)); });
    var thead = el("thead");
    thead.appendChild(tr);
    t.appendChild(thead);
    var body = el("tbody");
    rows.forEach(function (r) { body.appendChild(r); });
    t.appendChild(body);
  }
  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (c) {
      if (c instanceof Node) { tr.appendChild(c); return; }
      tr.appendChild(el("td", null, c));
    });
    return tr;
  }

  function tasks() {
    // The rows of names (at most MAX_TASK_ROWS), then the row of the other names together.
    var shown = [];
    data.tasks.forEach(function (t, i) { if (t.other || i < MAX_TASK_ROWS) shown.push(i); });
    var rows = shown.map(function (i) {
      var t = data.tasks[i];
      var name = el("td", { "class": "task" });
      var sw = el("span", { "class": "swatch" });
      sw.style.background = colour(i);
      name.appendChild(sw);
      // The folded row says how many names it holds (the summary counts them: `names`).
      name.appendChild(el("span", t.other ? { "class": "other" } : null,
                          t.other ? "other task names" + (t.names ? " (" + count(t.names) + ")" : "") : t.name));
      var failed = el("td", { "class": t.failed ? "failed" : "" }, count(t.failed));
      return row([name, count(t.calls), count(t.items), duration(t.p50), duration(t.p90), duration(t.max),
                  t.wait_n ? duration(t.wait_p50) : "", t.wait_n ? duration(t.wait_max) : "", failed,
                  count(t.never_ran)]);
    });
    table("tasks", ["task", "calls", "items", "p50", "p90", "max", "queue wait p50", "queue wait max",
                    "failed", "never ran"], rows);
    var named = data.tasks.filter(function (t) { return !t.other; }).length;
    if (named < data.tasks.length)
      document.getElementById("tasks").after(el("p", { "class": "hint" }, "Listed: the first " + count(named) +
                                                 " task names by name; the calls of the others are counted together in the last row."));
    else if (named > MAX_TASK_ROWS)
      document.getElementById("tasks").after(el("p", { "class": "hint" }, "Listed: the first " + count(MAX_TASK_ROWS) +
                                                 " of " + count(named) + " task names, by name."));
  }

  function workers() {
    var rows = data.tracks.map(function (t) {
      var life = t.life_end - t.life_begin;
      var share = present(t.life_begin) && life > 0 ? Math.min(1, t.busy / life) : 0;
      var bar = el("td");
      var outer = el("div", { "class": "bar", title: (100 * share).toFixed(1) + "% busy" });
      var inner = el("div");
      inner.style.width = (100 * share).toFixed(2) + "%";
      outer.appendChild(inner);
      bar.appendChild(outer);
      var ended = t.end_kind === "crash" ? "crashed" : t.end_kind === "exit" ? "exited" : "alive at the end";
      if (t.reason) ended += ": " + t.reason;
      if (t.error) ended += " (" + t.error + ")";
      return row([el("td", { "class": "text" }, t.label), (100 * share).toFixed(1) + "%", bar,
                  duration(t.busy), present(t.life_begin) ? duration(life) : "", count(t.slices),
                  el("td", { "class": t.failed ? "failed" : "" }, count(t.failed)),
                  el("td", { "class": "text" + (t.end_kind === "crash" ? " failed" : "") }, ended)]);
    });
    table("workers", ["worker", "busy", "", "busy time", "lifetime", "calls", "failed", ["end", "text"]], rows);
  }

  function stats() {
    document.getElementById("stats-source").textContent = data.stats.source === "trace"
      ? "From the trace's stats event (written when the executor shut down)."
      : "Computed from the events: the trace has no stats event, so it did not end with a clean shutdown.";
    table("stats", ["stat", "value"], data.stats.rows.map(function (r) {
      return row([el("td", { "class": "text" }, r[0]), typeof r[1] === "number" ? count(r[1]) : String(r[1])]);
    }));
  }

  function failures() {
    if (!data.failures.length) {
      document.getElementById("failures-note").textContent = "No call failed.";
      return;
    }
    table("failures", ["at", "call", ["task", "text"], ["worker", "text"], ["error", "text"], ["message", "text"]], data.failures.map(function (f) {
      return row([duration(f[0] - data.begin), present(f[1]) ? String(f[1]) : "", el("td", { "class": "text" }, present(f[6]) ? str(f[6]) : taskName(f[2])),
                  el("td", { "class": "text" }, f[3] === null ? "never ran" : f[3]),
                  el("td", { "class": "text failed" }, str(f[4])), el("td", { "class": "text" }, str(f[5]))]);
    }));
    if (data.failures.length < data.failures_total)
      document.getElementById("failures-note").textContent =
        "The first " + count(data.failures.length) + " of " + count(data.failures_total) + " failures.";
  }

  header();
  patterns();
  legend();
  controls();
  timeline();
  counters();
  tasks();
  workers();
  stats();
  failures();
  document.body.setAttribute("data-rendered", "1");
})();
