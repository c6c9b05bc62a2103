// SPDX-License-Identifier: BSD-3-Clause
// One input of the trace fuzzer (fuzz_trace.cpp; test_report replays the corpus): bytes as the
// content of a trace file, through everything `ferry report` does with one (cli/cmd_report.cpp):
// the reader (trace_reader), the summary (trace_summary), the notes and the page (report_html),
// written into memory. A trace may come from anyone, so for any bytes:
// - the reader gives events or an error with its line, in printable ASCII (it goes to a terminal),
//   and the same whatever blocks the text arrives in (read_trace reads 1 MiB at a time);
// - the summary's indices, orders and numbers are sound, and it keeps to its caps (tracks, slices,
//   marks, failures, task names, counter points and series, stats rows, text lengths), with the default caps
//   and with small ones that a few KB of input reach; under small caps it keeps what the default
//   caps keep of the same trace that a page of those caps draws (the lowest tids, the first calls,
//   marks and failures, the first task names, the others together), and counts the same totals;
// - the page is the template's markup with nothing but the data element changed; the data holds
//   no '<', '>' or '&' (so no "</script" and no "<!--") and no control character (C0, DEL, C1:
//   the page may be written to a terminal), is valid UTF-8 and JSON whose numbers are
//   all finite (JSON.parse takes no NaN), and keeps to the page's caps (ReportLimits: its texts
//   to max_text_bytes but those of the failures listed) and to a size linear in the input's.
// Anything else (a broken invariant, an exception, a sanitizer report) aborts.
#pragma once

#include <stdio.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../cli/report_assets.hpp"
#include "../../cli/report_html.hpp"
#include "../../cli/trace_reader.hpp"
#include "../../cli/trace_summary.hpp"
#include "platform/format.hpp"

namespace ferry::fuzz {

namespace trace_check {

namespace trace = ferry::cli::trace;
namespace json = ferry::detail::json;

[[noreturn]] inline void broken(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "trace fuzz invariant broken: %s: %.*s\n", what,
               static_cast<int>(std::min<std::size_t>(detail.size(), 2000)), detail.data());
  std::abort();
}

inline void check(bool ok, const char* what, std::string_view detail = {}) {
  if (!ok) broken(what, detail);
}

inline bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = ferry::detail::utf8_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// Printable ASCII only: what the reader's messages must be (they name bytes of the file as \xNN).
inline bool printable_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7F; });
}

/// One line of text without a control character: C0, DEL, or C1 (U+0080 to U+009F, in UTF-8
/// 0xC2 0x80-0x9F; U+009B is CSI). A bad note is printed to the terminal.
inline bool one_line(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x20 || u == 0x7F) return false;
    if (u == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0x9F) return false;
  }
  return true;
}

/// A text kept from the trace and cut at `max` bytes: valid UTF-8, at most max + "…".
inline void check_text(std::string_view s, std::size_t max, const char* what) {
  check(valid_utf8(s), what, s);
  check(s.size() <= max + 3, what, s);
}

/// The largest JSON text of a value the summary keeps as text of at most `max` bytes: a string
/// whose every byte is escaped (\u0001), with its quotes; a number is shorter.
constexpr std::size_t max_value_text(std::size_t max) { return 6 * (max + 3) + 2; }

/// A value the summary wrote as JSON text: valid JSON, a finite number or a string or a literal.
inline void check_value_text(const std::string& text, std::size_t max, const char* what) {
  check(text.size() <= max_value_text(max), what, text);
  json::Document doc;
  std::string error;
  check(ferry::detail::parse_json(text, doc, error), what, text + " (" + error + ")");
  check(doc.IsString() || doc.IsBool() || doc.IsNull() || (doc.IsNumber() && std::isfinite(doc.GetDouble())), what,
        text);
  if (doc.IsString()) check(valid_utf8(std::string_view(doc.GetString(), doc.GetStringLength())), what, text);
}

// ---- reading -----------------------------------------------------------------------------------

struct Event {
  std::string text;  ///< compact JSON, as read
  std::size_t line;
  bool operator==(const Event&) const = default;
};

struct Read {
  bool ok = false;
  trace::ReadResult result;
  std::vector<Event> events;
};

inline bool same(const trace::ReadResult& a, const trace::ReadResult& b) {
  return a.closed == b.closed && a.dropped_last == b.dropped_last && a.dropped_line == b.dropped_line &&
         a.dropped_bytes == b.dropped_bytes && a.dropped_why == b.dropped_why &&
         a.text_after_close_line == b.text_after_close_line && a.error_line == b.error_line && a.error == b.error;
}

inline std::string describe(const Read& r) {
  std::string s = std::string(r.ok ? "ok" : "failed") + ", " + std::to_string(r.events.size()) +
                  " events, closed " + std::to_string(r.result.closed) + ", dropped " +
                  std::to_string(r.result.dropped_last) + " at line " + std::to_string(r.result.dropped_line) + " (" +
                  std::to_string(r.result.dropped_bytes) + " bytes: " + r.result.dropped_why + "), after ']' " +
                  std::to_string(r.result.text_after_close_line) + ", error at line " +
                  std::to_string(r.result.error_line) + ": " + r.result.error;
  return s;
}

/// The read's own invariants: an error or a result, each consistent.
inline void check_read(const Read& r) {
  const trace::ReadResult& res = r.result;
  if (!r.ok) {
    check(!res.error.empty(), "a failed read without a message", describe(r));
    check(res.error_line >= 1, "a failed read without its line", describe(r));
    check(printable_ascii(res.error), "an error message that is not printable ASCII", res.error);
  } else {
    check(res.error.empty() && res.error_line == 0, "a read that succeeded with an error", describe(r));
  }
  if (res.dropped_last) {
    check(res.dropped_line >= 1 && res.dropped_bytes >= 1 && !res.dropped_why.empty(),
          "a dropped event without its line, size or reason", describe(r));
    check(printable_ascii(res.dropped_why), "a drop reason that is not printable ASCII", res.dropped_why);
  } else {
    check(res.dropped_line == 0 && res.dropped_bytes == 0 && res.dropped_why.empty(),
          "a drop described without a dropped event", describe(r));
  }
  check(res.text_after_close_line == 0 || res.closed, "text after a ']' that was not read", describe(r));
  std::size_t line = 1;
  for (const Event& e : r.events) {
    check(e.line >= line, "events out of line order", e.text);
    line = e.line;
  }
}

/// Reads `text` in blocks of `block` bytes; `also` sees each event as it is read.
template <class Also>
Read read(std::string_view text, std::size_t block, Also&& also) {
  Read r;
  r.ok = trace::read_trace_text(
      text,
      [&](const json::Value& event, std::size_t line) {
        check(event.IsObject(), "an event that is not an object");
        r.events.push_back({ferry::cli::json::write(event), line});
        also(event, line);
      },
      r.result, block);
  check_read(r);
  return r;
}

// ---- the summary -------------------------------------------------------------------------------

inline bool index_ok(std::int64_t i, std::size_t size) { return i >= -1 && (i < 0 || static_cast<std::size_t>(i) < size); }

inline void check_summary(const trace::Summary& s, const trace::SummaryLimits& limits) {
  const std::size_t n_strings = s.strings.strings().size();
  for (const std::string& text : s.strings.strings()) check_text(text, trace::max_message_bytes, "a kept string");
  check_text(s.process_name, trace::max_name_bytes, "the process name");
  check(!std::isnan(s.begin) && !std::isnan(s.end) && s.begin <= s.end, "the trace's span",
        std::to_string(s.begin) + " .. " + std::to_string(s.end));

  // Tracks: by tid, each once, at most max_tracks (the lowest of tracks_total); their counts add up
  // to the slices read on them, of which at least the first max_slices are kept (all of them when
  // no cut was made), unless a lower tid came after a cut (slices_partial).
  check(s.tracks.size() == std::min(s.tracks_total, std::max<std::size_t>(limits.max_tracks, 1)),
        "tracks kept are not the max_tracks lowest of those read");
  std::size_t track_slices = 0, track_failed = 0;
  for (std::size_t i = 0; i < s.tracks.size(); ++i) {
    const trace::Track& t = s.tracks[i];
    check(i == 0 || s.tracks[i - 1].tid < t.tid, "tracks not in tid order");
    check_text(t.label, trace::max_name_bytes, "a track label");
    check_text(t.end_reason, trace::max_name_bytes, "a track's end reason");
    check_text(t.end_error, trace::max_name_bytes, "a track's end error");
    check(!std::isnan(t.busy) && t.busy >= 0, "a track's busy time", std::to_string(t.busy));
    check(std::isfinite(t.start) && std::isfinite(t.end) && std::isfinite(t.first_slice), "a track's times");
    check(t.end_kind != trace::Track::End::alive || (t.end == -1 && t.end_reason.empty() && t.end_error.empty()),
          "an alive track with an end");
    track_slices += t.slices;
    track_failed += t.failed;
  }
  check(s.slices.size() <= track_slices && track_slices <= s.slices_total,
        "tracks' slices are fewer than those kept or more than those read");
  check(s.tracks.size() != s.tracks_total || track_slices == s.slices_total,
        "with every track kept, tracks' slices do not add up to the slices read");
  const std::size_t max_slices = std::max<std::size_t>(limits.max_slices, 1);
  check(s.slices.size() < 2 * max_slices, "more slices than twice the cap", std::to_string(s.slices.size()));
  check(s.slices_partial || s.slices.size() >= std::min(track_slices, max_slices),
        "fewer slices of the kept tracks than the cap, without saying so");

  // Tasks: by name, each once, at most max_tasks, the others together (without a name); their
  // counts add up.
  check(s.tasks.size() <= std::max<std::size_t>(limits.max_tasks, 1), "more task rows than the cap",
        std::to_string(s.tasks.size()));
  check(s.other_tasks.name.empty(), "the other tasks' row has a name", s.other_tasks.name);
  check(!s.tasks_folded() || s.tasks.size() == std::max<std::size_t>(limits.max_tasks, 1),
        "task names folded before the table was full");
  std::size_t task_calls = 0, task_failed = 0, task_never_ran = 0;
  for (std::size_t i = 0; i <= s.tasks.size(); ++i) {
    const trace::TaskFigures& t = i < s.tasks.size() ? s.tasks[i] : s.other_tasks;
    if (i < s.tasks.size()) {
      check(i == 0 || s.tasks[i - 1].name < t.name, "tasks not in name order, or a name twice", t.name);
      check_text(t.name, trace::max_name_bytes, "a task name");
    }
    check(t.durations.size() == t.calls, "a task's durations are not one per call", t.name);
    check(t.waits.size() <= t.calls && t.failed <= t.calls, "a task's waits or failures exceed its calls", t.name);
    check(std::is_sorted(t.durations.begin(), t.durations.end()) && std::is_sorted(t.waits.begin(), t.waits.end()),
          "a task's durations or waits not sorted", t.name);
    for (double d : t.durations) check(std::isfinite(d) && d >= 0, "a task duration", std::to_string(d));
    for (double w : t.waits) check(!std::isnan(w) && w >= 0, "a task wait", std::to_string(w));
    for (double p : {0.5, 0.9}) {
      double v = trace::percentile(t.durations, p);
      check(t.durations.empty() ? v == 0 : v >= t.durations.front() && v <= t.durations.back(), "a percentile",
            t.name);
    }
    task_calls += t.calls;
    task_failed += t.failed;
    task_never_ran += t.never_ran;
  }
  check(task_calls == s.slices_total, "tasks' calls do not add up to the slices read");
  check(track_failed <= task_failed, "tracks' failures exceed the tasks'");
  check(s.tracks.size() != s.tracks_total || task_failed == track_failed, "tasks' and tracks' failures differ");

  // Slices: by start; every index within its table.
  std::size_t failed_slices = 0;
  for (std::size_t i = 0; i < s.slices.size(); ++i) {
    const trace::Slice& sl = s.slices[i];
    check(i == 0 || s.slices[i - 1].ts <= sl.ts, "slices not in start order");
    check(std::isfinite(sl.ts) && std::isfinite(sl.dur) && sl.dur >= 0, "a slice's time");
    check(sl.track < s.tracks.size() && (sl.task < s.tasks.size() || (sl.task == trace::other_task && s.tasks_folded())),
          "a slice's track or task out of range");
    check(index_ok(sl.error, n_strings) && index_ok(sl.message, n_strings) && index_ok(sl.first_input, n_strings),
          "a slice's text out of range");
    check(sl.wait == -1 || (!std::isnan(sl.wait) && sl.wait >= 0), "a slice's wait", std::to_string(sl.wait));
    check(std::isfinite(sl.arg_bytes) && std::isfinite(sl.result_bytes), "a slice's sizes");
    failed_slices += sl.error >= 0;
  }
  check(failed_slices <= track_failed, "more failed slices kept than the tracks' failures");
  check(s.slices.size() != track_slices || failed_slices == track_failed,
        "failed slices and the tracks' failures differ with every slice of theirs kept");

  const std::size_t max_marks = std::max<std::size_t>(limits.max_marks, 1);
  check(s.marks.size() < 2 * max_marks, "more marks than twice the cap", std::to_string(s.marks.size()));
  for (std::size_t i = 0; i < s.marks.size(); ++i) {
    const trace::Mark& m = s.marks[i];
    check(i == 0 || s.marks[i - 1].ts <= m.ts, "marks not in time order");
    check(std::isfinite(m.ts), "a mark's time");
    check(m.track < s.tracks.size(), "a mark's track out of range");
    check(index_ok(m.reason, n_strings) && index_ok(m.error, n_strings), "a mark's text out of range");
  }
  std::size_t never_ran = 0, failed_listed = 0;
  for (std::size_t i = 0; i < s.failures.size(); ++i) {
    const trace::Failure& f = s.failures[i];
    check(i == 0 || s.failures[i - 1].ts <= f.ts, "failures not in time order");
    check(std::isfinite(f.ts), "a failure's time");
    check(f.task < s.tasks.size() || (f.task == trace::other_task && s.tasks_folded()), "a failure's task out of range");
    check(f.task == trace::other_task ? f.task_name >= 0 && static_cast<std::size_t>(f.task_name) < n_strings
                                      : f.task_name == -1,
          "a failure of a folded task without its name, or of a listed one with it");
    check(f.track >= -1 && (f.track < 0 || static_cast<std::size_t>(f.track) < s.tracks.size()),
          "a failure's track out of range");
    check(index_ok(f.error, n_strings) && index_ok(f.message, n_strings) && index_ok(f.track_label, n_strings),
          "a failure's text out of range");
    check(f.track < 0 || f.track_label < 0, "a failure with both a kept track and a label");
    // Never ran: neither a kept track nor the label of one not kept.
    if (f.track < 0 && f.track_label < 0) ++never_ran;
    else ++failed_listed;
  }
  // Failures: every failed slice and `call ended` counted; at least the first max_failures kept,
  // at most four times that.
  const std::size_t max_failures = std::max<std::size_t>(limits.max_failures, 1);
  check(s.failures_total == task_failed + task_never_ran, "failures read are not the tasks' failed and never-ran");
  check(s.failures.size() <= s.failures_total && s.failures.size() >= std::min(s.failures_total, max_failures) &&
            s.failures.size() < 4 * max_failures,
        "failures kept outside their cap", std::to_string(s.failures.size()));
  check(never_ran <= task_never_ran && failed_listed <= task_failed, "more failures listed than read");
  check(s.failures.size() != s.failures_total || (never_ran == task_never_ran && failed_listed == task_failed),
        "with every failure kept, `call ended` and failed slices listed differ from the tasks'");

  // Counters: at most max_counter_series series, max_counter_points points of one value each.
  const trace::Counters& c = s.counters;
  check(c.names.size() <= limits.max_counter_series, "more counter series than the cap",
        std::to_string(c.names.size()));
  for (std::size_t i = 0; i < c.names.size(); ++i) {
    check_text(c.names[i], 2 * trace::max_name_bytes + 4, "a counter name");
    for (std::size_t k = 0; k < i; ++k) check(c.names[k] != c.names[i], "a counter series twice", c.names[i]);
  }
  check(c.points.size() <= limits.max_counter_points, "more counter points than the cap",
        std::to_string(c.points.size()));
  check(c.points.empty() || c.events > 0, "counter points without counter events");
  for (std::size_t i = 0; i < c.points.size(); ++i) {
    const auto& [ts, values] = c.points[i];
    check(std::isfinite(ts), "a counter point's time", std::to_string(ts));
    check(i == 0 || c.points[i - 1].first < ts, "counter points not in time order");
    check(values.size() == c.names.size(), "a counter point without one value per series");
    for (double v : values) check(std::isfinite(v), "a counter value", std::to_string(v));
  }

  // Rows: the stats event's and the header's stop at max_stat_rows; computed ones add 7 fixed rows
  // to at most max_stat_rows - 3 per error type and exit reason.
  check(s.meta.size() <= limits.max_stat_rows, "more header rows than the cap", std::to_string(s.meta.size()));
  const std::size_t max_rows = s.has_stats ? limits.max_stat_rows : std::max<std::size_t>(limits.max_stat_rows, 3) + 4;
  check(s.stats.size() <= max_rows, "more stats rows than the cap", std::to_string(s.stats.size()));
  check(s.has_stats || s.stats.size() >= 7, "computed stats without their fixed rows");
  for (const auto& [name, value] : s.meta) {
    check_text(name, 2 * trace::max_name_bytes + 4, "a header row's name");
    check_value_text(value, trace::max_name_bytes, "a header row's value");
  }
  for (const trace::StatRow& row : s.stats) {
    check_text(row.name, 2 * trace::max_name_bytes + 4, "a stats row's name");
    check_value_text(row.value, trace::max_name_bytes, "a stats row's value");
  }
  if (!s.truncated_max_bytes.empty()) check_value_text(s.truncated_max_bytes, 40, "the truncation's max_bytes");
  check(s.skipped == 0 || s.first_skipped_line >= 1, "skipped events without the line of the first");
}

// ---- the page ----------------------------------------------------------------------------------

/// The page written into memory.
inline std::string render(const trace::Page& page, const std::vector<trace::Note>& notes) {
  char* buffer = nullptr;
  std::size_t size = 0;
  std::FILE* f = ::open_memstream(&buffer, &size);
  check(f != nullptr, "open_memstream");
  bool ok = trace::write_report_html(f, "fuzz.trace", "ferry fuzz", page, notes);
  check(std::fclose(f) == 0, "closing the memory stream");
  std::string html(buffer, size);
  std::free(buffer);
  check(ok, "writing the page into memory failed");
  return html;
}

/// The template with its placeholders filled as write_report_html fills them, `data` aside.
inline std::string filled(std::string_view part, std::string_view nonce) {
  std::string out;
  for (;;) {
    auto open = part.find("{{");
    if (open == std::string_view::npos) break;
    auto close = part.find("}}", open);
    check(close != std::string_view::npos, "an unclosed placeholder in the template");
    out += part.substr(0, open);
    std::string_view name = part.substr(open + 2, close - open - 2);
    if (name == "nonce") out += nonce;
    else if (name == "style") out += ferry::cli::assets::report_css;
    else if (name == "script") out += ferry::cli::assets::report_js;
    else broken("an unknown placeholder in the template", name);
    part.remove_prefix(close + 2);
  }
  out += part;
  return out;
}

inline void check_numbers(const json::Value& v) {
  if (v.IsNumber()) check(std::isfinite(v.GetDouble()), "a number JSON.parse would refuse");
  if (v.IsArray())
    for (const auto& e : v.GetArray()) check_numbers(e);
  if (v.IsObject())
    for (const auto& m : v.GetObject()) check_numbers(m.value);
}

inline std::int64_t page_index(const json::Value& v, std::size_t size, const char* what) {
  if (v.IsNull()) return -1;
  check(v.IsUint64() && v.GetUint64() < size, what);
  return static_cast<std::int64_t>(v.GetUint64());
}

inline void check_page(const std::string& page, std::size_t input_size, const trace::Summary& s,
                       const trace::SummaryLimits& summary_limits, const trace::ReportLimits& limits) {
  // The page's own markup is the template's, byte for byte: the data element is all that varies.
  const std::string csp = "script-src 'nonce-";
  auto at = page.find(csp);
  check(at != std::string::npos && at + csp.size() + 32 <= page.size(), "a page without its nonce");
  const std::string nonce = page.substr(at + csp.size(), 32);
  check(nonce.find_first_not_of("0123456789abcdef") == std::string::npos, "a nonce that is not 32 hex digits", nonce);
  const std::string_view html = ferry::cli::assets::report_html;
  const auto data_at = html.find("{{data}}");
  check(data_at != std::string_view::npos, "a template without its data placeholder");
  const std::string before = filled(html.substr(0, data_at), nonce);
  const std::string after = filled(html.substr(data_at + 8), nonce);
  check(page.size() >= before.size() + after.size() && page.compare(0, before.size(), before) == 0 &&
            page.compare(page.size() - after.size(), after.size(), after) == 0,
        "the page's markup is not the template's");
  const std::string_view data = std::string_view(page).substr(before.size(), page.size() - before.size() - after.size());

  // Nothing in the data element can end it or start markup: no '<' at all (so no "</script", no
  // "<!--"), nor '>' or '&'.
  auto bad = data.find_first_of("<>&");
  check(bad == std::string_view::npos, "markup characters in the page's data",
        data.substr(bad == std::string_view::npos ? 0 : bad - std::min<std::size_t>(bad, 80), 200));
  check(valid_utf8(data), "page data that is not valid UTF-8");
  // Nor a control character a terminal acts on (`-o -` may write the page to one): RapidJSON
  // escapes C0, the page's stream DEL and C1 (\u007f, \u0080...\u009f).
  check(one_line(data), "a control character in the page's data",
        data.substr(0, std::min<std::size_t>(data.size(), 2000)));
  // Linear in the input: each event adds a bounded amount (a failure repeats its track's label,
  // at most 300 bytes, each byte at most 6 when escaped).
  check(data.size() <= 64 * 1024 + 64 * input_size, "page data out of proportion to the trace",
        std::to_string(data.size()) + " bytes from " + std::to_string(input_size));

  json::Document doc;
  std::string error;
  check(ferry::detail::parse_json(data, doc, error), "page data that is not JSON", error);
  check(doc.IsObject(), "page data that is not an object");
  check_numbers(doc);

  auto array = [&](const json::Value& parent, const char* name) -> const json::Value& {
    check(parent.IsObject() && parent.HasMember(name) && parent[name].IsArray(), "a missing array in the page", name);
    return parent[name];
  };
  const json::Value& strings = array(doc, "strings");
  const json::Value& tasks = array(doc, "tasks");
  const json::Value& tracks = array(doc, "tracks");
  const json::Value& slices = array(doc, "slices");
  const json::Value& marks = array(doc, "marks");
  const json::Value& failures = array(doc, "failures");
  auto object = [&](const char* name) -> const json::Value& {
    check(doc.HasMember(name) && doc[name].IsObject(), "a missing object in the page", name);
    return doc[name];
  };
  const json::Value& counters = object("counters");
  const json::Value& stats = object("stats");
  // The first max_tasks names, then the others together.
  const bool folded = s.tasks_folded() || s.tasks.size() > limits.max_tasks;
  check(tasks.Size() == std::min(s.tasks.size(), limits.max_tasks) + folded, "the page's tasks past their cap");
  for (unsigned i = 0; i < tasks.Size(); ++i) {
    const bool other = tasks[i].IsObject() && tasks[i].HasMember("other");
    check(other == (folded && i + 1 == tasks.Size()), "the other tasks' row is not the page's last task row");
  }
  check(tracks.Size() == std::min(s.tracks.size(), limits.max_tracks), "the page's tracks past their cap");
  check(slices.Size() <= limits.max_slices, "the page's slices past their cap");
  check(marks.Size() <= limits.max_marks, "the page's marks past their cap");
  check(failures.Size() <= std::min(limits.max_failures, s.failures.size()), "the page's failures past their cap");
  check(strings.Size() <= 3 * slices.Size() + 2 * marks.Size() + 3 * failures.Size() + 1,
        "the page's strings are more than its rows use");
  for (const auto& text : strings.GetArray()) {
    check(text.IsString(), "a page string that is not a string");
    check_text(std::string_view(text.GetString(), text.GetStringLength()), trace::max_message_bytes, "a page string");
  }
  // Bounded whatever the trace holds: the texts are those of the failures listed, and of the calls
  // and marks drawn as many as max_text_bytes holds (with "(left out ...)"), each at most 7 bytes
  // of JSON a byte (\\u202e for 3), task names the first max_tasks.
  {
    std::size_t text_bytes = 0;
    for (const auto& text : strings.GetArray()) text_bytes += text.GetStringLength();
    const std::size_t per_failure = 7 * (2 * (trace::max_message_bytes + 3) + trace::max_name_bytes + 3);
    check(text_bytes <= limits.max_text_bytes + 200 + failures.Size() * per_failure,
          "the page's texts past max_text_bytes", std::to_string(text_bytes));
  }
  for (const auto& sl : slices.GetArray()) {
    check(sl.IsArray() && sl.Size() == 12, "a page slice of the wrong shape");
    page_index(sl[2], tracks.Size(), "a page slice's track out of range");
    page_index(sl[3], tasks.Size(), "a page slice's task out of range");
    for (unsigned k : {9u, 10u, 11u}) page_index(sl[k], strings.Size(), "a page slice's text out of range");
  }
  for (const auto& m : marks.GetArray()) {
    check(m.IsArray() && m.Size() == 5, "a page mark of the wrong shape");
    page_index(m[1], tracks.Size(), "a page mark's track out of range");
    page_index(m[3], strings.Size(), "a page mark's text out of range");
    page_index(m[4], strings.Size(), "a page mark's text out of range");
  }
  for (const auto& f : failures.GetArray()) {
    check(f.IsArray() && f.Size() == 7, "a page failure of the wrong shape");
    const std::int64_t task = page_index(f[2], tasks.Size(), "a page failure's task out of range");
    const std::int64_t name = page_index(f[6], strings.Size(), "a page failure's task name out of range");
    check(task >= 0 && (name >= 0) == tasks[static_cast<unsigned>(task)].HasMember("other"),
          "a page failure of the other tasks without its name, or of a listed one with it");
    page_index(f[4], strings.Size(), "a page failure's text out of range");
    page_index(f[5], strings.Size(), "a page failure's text out of range");
  }
  const json::Value& names = array(counters, "names");
  const json::Value& points = array(counters, "points");
  check(names.Size() <= summary_limits.max_counter_series, "the page's counter series past their cap");
  check(points.Size() <= summary_limits.max_counter_points, "the page's counter points past their cap");
  for (const auto& p : points.GetArray())
    check(p.IsArray() && p.Size() == 1 + names.Size(), "a page counter point without one value per series");
  const std::size_t max_rows =
      s.has_stats ? summary_limits.max_stat_rows : std::max<std::size_t>(summary_limits.max_stat_rows, 3) + 4;
  check(array(stats, "rows").Size() <= max_rows, "the page's stats rows past their cap");
  check(array(doc, "meta").Size() <= summary_limits.max_stat_rows, "the page's header rows past their cap");
  check(doc.HasMember("slices_total") && doc["slices_total"].IsUint64() && doc["slices_total"].GetUint64() == s.slices_total,
        "the page's slice total is not the summary's");
  check(doc.HasMember("failures_total") && doc["failures_total"].IsUint64() &&
            doc["failures_total"].GetUint64() == s.failures_total,
        "the page's failure total is not the summary's");
  check(doc.HasMember("tracks_total") && doc["tracks_total"].IsUint64() && doc["tracks_total"].GetUint64() == s.tracks_total,
        "the page's track total is not the summary's");
}

inline std::string text_of(const trace::Summary& s, std::int32_t i) {
  return i < 0 ? std::string("\x01none") : s.strings.strings()[static_cast<std::size_t>(i)];
}

/// The name of a Summary's task `task` (its row's, or `name`, a text, for a folded one: "\x01other"
/// for a slice's, which has none).
inline std::string task_of(const trace::Summary& s, std::uint32_t task, std::int32_t name) {
  if (task < s.tasks.size()) return s.tasks[task].name;
  return name >= 0 ? s.strings.strings()[static_cast<std::size_t>(name)] : std::string("\x01other");
}

/// Whether a slice of `a` (under small caps) and one of `b` (the same trace under the default
/// ones, whose rows begin with a's) are of one task: the same row, or both past a's rows.
inline bool same_task(const trace::Summary& a, std::uint32_t x, const trace::Summary& b, std::uint32_t y) {
  if (x < a.tasks.size()) return y < b.tasks.size() && a.tasks[x].name == b.tasks[y].name;
  return x == trace::other_task && (y == trace::other_task || y >= a.tasks.size());
}

/// Text `x` of `a` (under small caps) is text `y` of `b`, or one `a` let go (its page would not
/// show it: empty there, SummaryBuilder's text check; the small caps look at every text).
inline bool same_text(const trace::Summary& a, std::int32_t x, const trace::Summary& b, std::int32_t y) {
  if (x >= 0 && a.strings.let_go(x)) return y >= 0;
  return text_of(a, x) == text_of(b, y);
}

inline bool same_slice(const trace::Summary& a, const trace::Slice& x, const trace::Summary& b, const trace::Slice& y) {
  return x.ts == y.ts && x.dur == y.dur && x.wait == y.wait && x.arg_bytes == y.arg_bytes &&
         x.result_bytes == y.result_bytes && x.call == y.call && x.items == y.items && x.track == y.track &&
         same_task(a, x.task, b, y.task) && same_text(a, x.error, b, y.error) &&
         same_text(a, x.message, b, y.message) && same_text(a, x.first_input, b, y.first_input);
}

inline bool same_mark(const trace::Summary& a, const trace::Mark& x, const trace::Summary& b, const trace::Mark& y) {
  return x.kind == y.kind && x.ts == y.ts && x.track == y.track && same_text(a, x.reason, b, y.reason) &&
         same_text(a, x.error, b, y.error);
}

/// `kept` (of the summary under small caps) against `all` (of the same trace under the default
/// caps) restricted to the tracks `small` kept: a subsequence of it, whose first `cap` are its
/// first `cap` unless `partial`.
template <class Record, class Same>
void check_kept_records(const trace::Summary& small, const std::vector<Record>& kept, const trace::Summary& full,
                        const std::vector<Record>& all, std::size_t cap, bool partial, Same same, const char* what) {
  std::vector<const Record*> drawn;
  for (const Record& r : all)
    if (r.track < small.tracks.size()) drawn.push_back(&r);
  std::size_t j = 0;
  for (std::size_t i = 0; i < kept.size(); ++i, ++j) {
    while (j < drawn.size() && !same(small, kept[i], full, *drawn[j])) {
      check(partial || i >= cap, what, "one of the first is not the default caps' first");
      ++j;
    }
    check(j < drawn.size(), what, "one kept that the default caps do not have");
  }
  check(partial || kept.size() >= std::min(cap, drawn.size()), what, "fewer than the cap");
}

/// A summary under small caps against the same trace's under the default ones (which an input
/// of at most 64 KB never reaches): the same totals and tasks; the lowest tids, as they are
/// there; of their slices and marks, at least the first (but when slices_partial or marks_partial
/// says otherwise) and none that are not there; the first failures; the first series, the first
/// rows; and each kept series peaks where it did, however its points were reduced.
inline void check_against_default(const trace::Summary& small, const trace::SummaryLimits& limits,
                                  const trace::Summary& full) {
  check(full.tracks.size() == full.tracks_total && full.slices.size() == full.slices_total &&
            full.failures.size() == full.failures_total && !full.slices_partial && !full.marks_partial,
        "the default caps reached");
  check(small.slices_total == full.slices_total && small.tracks_total == full.tracks_total &&
            small.failures_total == full.failures_total && small.skipped == full.skipped,
        "the summary's totals differ with its caps");
  // Tasks: the first names by name, as they are there; the others together.
  check(!full.tasks_folded() && small.tasks.size() <= full.tasks.size(), "the summary's tasks differ with its caps");
  trace::TaskFigures others;
  for (std::size_t i = 0; i < full.tasks.size(); ++i) {
    const trace::TaskFigures& b = full.tasks[i];
    if (i >= small.tasks.size()) {
      others.calls += b.calls;
      others.items += b.items;
      others.failed += b.failed;
      others.never_ran += b.never_ran;
      others.durations.insert(others.durations.end(), b.durations.begin(), b.durations.end());
      others.waits.insert(others.waits.end(), b.waits.begin(), b.waits.end());
      continue;
    }
    const trace::TaskFigures& a = small.tasks[i];
    check(a.name == b.name && a.calls == b.calls && a.items == b.items && a.failed == b.failed &&
              a.never_ran == b.never_ran && a.durations == b.durations && a.waits == b.waits,
          "a task's figures differ with the caps", a.name);
  }
  std::sort(others.durations.begin(), others.durations.end());
  std::sort(others.waits.begin(), others.waits.end());
  const trace::TaskFigures& folded = small.other_tasks;
  check(folded.calls == others.calls && folded.items == others.items && folded.failed == others.failed &&
            folded.never_ran == others.never_ran && folded.durations == others.durations && folded.waits == others.waits,
        "the other tasks' figures are not those of the names past the first");
  check(small.tracks.size() <= full.tracks.size(), "more tracks kept than read");
  for (std::size_t i = 0; i < small.tracks.size(); ++i) {
    const trace::Track &a = small.tracks[i], &b = full.tracks[i];
    check(a.tid == b.tid && a.label == b.label && a.start == b.start && a.end == b.end && a.end_kind == b.end_kind &&
              a.end_reason == b.end_reason && a.end_error == b.end_error && a.first_slice == b.first_slice &&
              a.busy == b.busy && a.slices == b.slices && a.failed == b.failed,
          "a kept track differs from the default caps' (or is not one of the lowest tids)", a.label);
  }
  check_kept_records(small, small.slices, full, full.slices, std::max<std::size_t>(limits.max_slices, 1),
                     small.slices_partial, same_slice, "the slices kept");
  check_kept_records(small, small.marks, full, full.marks, std::max<std::size_t>(limits.max_marks, 1),
                     small.marks_partial, same_mark, "the marks kept");
  const std::size_t first_failures = std::min(small.failures.size(), std::max<std::size_t>(limits.max_failures, 1));
  for (std::size_t i = 0; i < first_failures; ++i) {
    const trace::Failure &a = small.failures[i], &b = full.failures[i];
    const bool ran_a = a.track >= 0 || a.track_label >= 0, ran_b = b.track >= 0 || b.track_label >= 0;
    check(a.ts == b.ts && a.call == b.call && task_of(small, a.task, a.task_name) == task_of(full, b.task, b.task_name) &&
              text_of(small, a.error) == text_of(full, b.error) &&
              text_of(small, a.message) == text_of(full, b.message) && ran_a == ran_b,
          "one of the first failures differs with the caps");
    // Its worker: the same kept track, or one the small caps left out.
    check(a.track >= 0 ? a.track == b.track : !ran_a || static_cast<std::size_t>(b.track) >= small.tracks.size(),
          "a failure's worker differs with the caps");
  }
  check(!full.counters.reduced, "counters reduced under the default caps");
  check(small.counters.names.size() <= full.counters.names.size() &&
            std::equal(small.counters.names.begin(), small.counters.names.end(), full.counters.names.begin()),
        "the counter series kept are not the first ones");
  check(small.counters.points.empty() == full.counters.points.empty(), "counter points lost");
  // From the small summary's first point on (before it, the full one may show a series at 0
  // where a series the small one left out made a point), a kept series changes only at points
  // both have, and a reduced bucket keeps the maximum of its points.
  for (std::size_t j = 0; j < small.counters.names.size(); ++j) {
    auto peak = [j, from = small.counters.points.front().first](const trace::Counters& c) {
      double top = -INFINITY;
      for (const auto& point : c.points)
        if (point.first >= from) top = std::max(top, point.second[j]);
      return top;
    };
    check(peak(small.counters) == peak(full.counters), "a counter's peak lost when its points were reduced",
          small.counters.names[j] + ": " + std::to_string(peak(small.counters)) + " instead of " +
              std::to_string(peak(full.counters)));
  }
  if (!small.counters.points.empty())
    check(small.counters.points.front().first >= full.counters.points.front().first &&
              small.counters.points.back().first <= full.counters.points.back().first,
          "counter points outside the counters' span");
  auto prefix = [](const auto& a, const auto& b) {
    return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const auto& x, const auto& y) {
             return x.first == y.first && x.second == y.second;
           });
  };
  check(prefix(small.meta, full.meta), "the header rows kept are not the first ones");
  if (small.has_stats) {
    std::vector<std::pair<std::string, std::string>> a, b;
    for (const auto& r : small.stats) a.emplace_back(r.name, r.value);
    for (const auto& r : full.stats) b.emplace_back(r.name, r.value);
    check(prefix(a, b), "the stats rows kept are not the first ones");
  }
}

/// The caps `ferry report` uses, and small ones that a fuzz input of a few KB reaches: the
/// summary's track, slice, mark and failure caps are the page's (summary_limits(), as `ferry
/// report` sets them).
struct Caps {
  trace::SummaryLimits summary;
  trace::ReportLimits report;
};
inline Caps caps_of(const trace::ReportLimits& report, const trace::SummaryLimits& base) {
  return {trace::summary_limits(report, base), report};
}
inline const Caps caps[] = {
    caps_of({}, {}),
    caps_of({.max_slices = 2, .max_tracks = 2, .max_marks = 3, .max_failures = 2, .max_tasks = 2, .max_text_bytes = 40},
            {.max_counter_points = 3, .max_counter_series = 2, .max_stat_rows = 4, .text_check_bytes = 0}),
    caps_of({.max_slices = 1, .max_tracks = 1, .max_marks = 1, .max_failures = 1, .max_tasks = 1, .max_text_bytes = 0},
            {.max_counter_points = 1, .max_counter_series = 1, .max_stat_rows = 1, .text_check_bytes = 0}),
    caps_of({.max_slices = 3, .max_tracks = 3, .max_marks = 2, .max_failures = 3},
            {.max_counter_points = 4000, .max_counter_series = 16, .max_stat_rows = 500}),
};
inline constexpr std::size_t n_caps = sizeof caps / sizeof caps[0];

}  // namespace trace_check

/// One fuzz input: `text` as a trace file's content, through `ferry report`'s reader, summary,
/// notes and page, under each set of caps.
inline void trace_one_input(std::string_view text) {
  using namespace trace_check;
  try {
    std::vector<std::unique_ptr<trace::SummaryBuilder>> builders;
    for (const Caps& c : caps) builders.push_back(std::make_unique<trace::SummaryBuilder>(c.summary));
    const Read whole = read(text, trace::read_block_bytes, [&](const json::Value& event, std::size_t line) {
      for (auto& b : builders) b->add(event, line);
    });
    // Where the blocks end changes nothing (a file is read 1 MiB at a time): the same text in
    // blocks of 1 to 16 bytes (by its size, so that mutations try them all), the event being
    // read, a string, an escape, an error's quote cut at every place.
    const std::size_t block = 1 + text.size() % 16;
    const Read split = read(text, block, [](const json::Value&, std::size_t) {});
    if (split.ok != whole.ok || !same(split.result, whole.result) || split.events != whole.events)
      broken("the read depends on where the blocks end",
             "in blocks of " + std::to_string(block) + ": " + describe(split) + "; whole: " + describe(whole));
    if (!whole.ok) return;  // `ferry report` stops here, with the error and its line

    trace::Summary full;
    for (std::size_t k = 0; k < n_caps; ++k) {
      const trace::Summary summary = builders[k]->finish();
      check_summary(summary, caps[k].summary);
      if (k == 0) full = summary;
      else check_against_default(summary, caps[k].summary, full);
      const trace::Page selection(summary, caps[k].report);
      const std::vector<trace::Note> notes = trace::report_notes(whole.result, selection);
      for (const trace::Note& n : notes) {
        check(!n.text.empty() && valid_utf8(n.text), "a note that is empty or not UTF-8", n.text);
        check(one_line(n.text), "a note with a control character (notes are printed as lines)", n.text);
      }
      const std::string page = render(selection, notes);
      check_page(page, text.size(), summary, caps[k].summary, caps[k].report);
    }
  } catch (const std::exception& e) {
    broken("an exception escaped", e.what());
  }
}

/// `path` read as `ferry report` reads it (read_trace, from the file) gives what its content read
/// from memory gives: the replay test's check that the fuzzer's entry point is the command's.
inline void trace_file_reads_as_text(const std::filesystem::path& path, std::string_view text) {
  using namespace trace_check;
  Read from_file;
  from_file.ok = trace::read_trace(
      path, [&](const json::Value& event, std::size_t line) { from_file.events.push_back({ferry::cli::json::write(event), line}); },
      from_file.result);
  const Read from_text = read(text, trace::read_block_bytes, [](const json::Value&, std::size_t) {});
  if (from_file.ok != from_text.ok || !same(from_file.result, from_text.result) || from_file.events != from_text.events)
    broken("the file reads otherwise than its text", describe(from_file) + "; text: " + describe(from_text));
}

}  // namespace ferry::fuzz
