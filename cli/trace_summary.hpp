// SPDX-License-Identifier: BSD-3-Clause
// What `ferry report` shows, computed from a trace's events (docs/trace-format.md): tracks, slices,
// per-task figures, worker utilisation, the stats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json.hpp"

namespace ferry::cli::trace {

/// The summary's strings (error types, messages, first inputs, labels of tracks not kept, the
/// task names of failures whose task is folded into Summary::other_tasks), each
/// held once: SummaryBuilder hands each distinct text over once (it keeps them distinct while
/// reading), so the table needs no index. Index -1 means none.
///
/// A text of calls and marks that a page of SummaryLimits::max_text_bytes would not show was *let
/// go* while reading (SummaryBuilder keeps no more text than the page shows): its place stays,
/// empty, with the bytes the page would have taken for it, and the page shows "(left out ...)".
class StringTable {
 public:
  /// Appends `s` (moved in, not copied) and returns its index.
  std::int32_t add(std::string&& s);
  /// Appends the place of a text let go, which would take `page_bytes` in the page
  /// (page_text_bytes()), and returns its index; its string is empty.
  std::int32_t add_let_go(std::uint32_t page_bytes);
  const std::vector<std::string>& strings() const { return strings_; }
  /// Whether text `i` (>= 0) was let go.
  bool let_go(std::int32_t i) const;
  /// The page's bytes of text `i`, let go.
  std::uint32_t let_go_bytes(std::int32_t i) const;
  /// How many texts were let go.
  std::size_t let_go_count() const { return let_go_.size(); }

 private:
  std::vector<std::string> strings_;
  std::vector<std::pair<std::int32_t, std::uint32_t>> let_go_;  ///< (index, page bytes), by index
};

/// A worker track (tid >= 1; tid 0 only when it holds slices).
struct Track {
  std::int64_t tid = 0;
  std::string label;          ///< its thread_name, else "track N"
  double start = -1;          ///< the `worker start` instant; -1: none
  double end = -1;            ///< its `worker exit` or `worker crash` instant; -1: none
  enum class End { alive, exit, crash } end_kind = End::alive;
  std::string end_reason;     ///< args.reason of the exit or crash
  std::string end_error;      ///< args.error of a crash
  double first_slice = -1;
  double busy = 0;            ///< union of its slices' durations
  std::size_t slices = 0;
  std::size_t failed = 0;
  /// Where its life starts and ends for utilisation: start (else first slice), end (else the
  /// end of the trace).
  double life_begin() const { return start >= 0 ? start : first_slice; }
};

/// One `X` slice: a call on a worker.
struct Slice {
  double ts = 0;
  double dur = 0;
  double wait = -1;                ///< queue wait from the matching b/e; -1: none
  double arg_bytes = -1;           ///< -1: absent
  double result_bytes = -1;
  std::int64_t call = -1;          ///< -1: absent
  std::uint64_t items = 1;
  std::uint32_t track = 0;         ///< index into Summary::tracks
  std::uint32_t task = 0;          ///< index into Summary::tasks, or other_task
  std::int32_t error = -1;         ///< StringTable indices
  std::int32_t message = -1;
  std::int32_t first_input = -1;
};

/// A worker start / exit / crash instant.
struct Mark {
  enum class Kind { start, exit, crash } kind = Kind::start;
  double ts = 0;
  std::uint32_t track = 0;
  std::int32_t reason = -1;  ///< StringTable indices
  std::int32_t error = -1;
};

/// Slice::task and Failure::task of a call whose task name is not among Summary::tasks (past
/// SummaryLimits::max_tasks): it is counted in Summary::other_tasks.
inline constexpr std::uint32_t other_task = 0xFFFF'FFFF;

/// A call that ended without reaching a worker (`call ended`), or a failed slice.
struct Failure {
  double ts = 0;
  std::int64_t call = -1;
  std::uint32_t task = 0;    ///< index into Summary::tasks, or other_task
  std::int32_t task_name = -1;  ///< when task is other_task: its name (a StringTable index)
  std::int64_t track = -1;   ///< -1: never ran, or ran on a track not in Summary::tracks
  std::int32_t error = -1;
  std::int32_t message = -1;
  /// A failed slice on a track not in Summary::tracks (past max_tracks): that track's label (a
  /// StringTable index); -1 otherwise, so that a failure with track and track_label both -1 is a
  /// call that never ran. The label is the one the track had when the slice was read if the track
  /// was not kept then, else (a lower tid took its place later) the one it had when the reading
  /// ended; either comes from the last max_tracks tracks named while not kept, else "track N".
  std::int32_t track_label = -1;
};

/// Per task name: the table row.
struct TaskFigures {
  std::string name;
  std::size_t calls = 0;           ///< slices (calls that ran on a worker)
  std::uint64_t items = 0;
  std::size_t failed = 0;          ///< slices with an error
  std::size_t never_ran = 0;       ///< `call ended` instants
  std::vector<double> durations;   ///< of its slices (sorted once read)
  std::vector<double> waits;       ///< queue waits of its slices that have one (sorted)
};

/// A time series of the `C` events, reduced to at most a few thousand points.
struct Counters {
  std::vector<std::string> names;                    ///< "queued", "running", "workers", ...
  std::vector<std::pair<double, std::vector<double>>> points;  ///< ts, one value per name
  std::size_t events = 0;                            ///< `C` events read
  bool reduced = false;                              ///< points are maxima over time buckets
};

/// One row of the stats table: a name and its value (a JSON number or string).
struct StatRow {
  std::string name;
  std::string value;   ///< JSON text of the value
};

/// Everything the report shows. What the page can draw is kept (SummaryLimits::max_tracks and
/// the others); everything read is counted.
struct Summary {
  std::vector<std::pair<std::string, std::string>> meta;  ///< the `ferry` metadata, flattened; values are JSON text
  std::string process_name;
  std::vector<Track> tracks;       ///< by tid: the max_tracks lowest tids
  std::vector<Slice> slices;       ///< by start time: of those tracks, at least the first max_slices
  std::vector<Mark> marks;         ///< by time: of those tracks, at least the first max_marks
  std::vector<Failure> failures;   ///< by time: at least the first max_failures
  std::size_t tracks_total = 0;    ///< distinct tids read
  std::size_t slices_total = 0;    ///< `X` slices read
  std::size_t failures_total = 0;  ///< failed slices and `call ended` instants read
  /// A track with a lower tid came after calls (marks) of the tracks kept had been left out for
  /// the cap: `slices` (`marks`) may miss some of the first ones of the tracks drawn.
  bool slices_partial = false;
  bool marks_partial = false;
  /// Slices that came more than busy_window places out of start order on their track: those
  /// tracks' busy time may count an overlap twice.
  std::size_t busy_out_of_order = 0;
  std::vector<TaskFigures> tasks;  ///< by name: the max_tasks smallest names read
  /// The calls of the other task names, counted together (name empty); none when there were at
  /// most max_tasks names. A name left out is never counted on its own again: its figures so far
  /// are added here, as are its later calls.
  TaskFigures other_tasks;
  /// How many distinct task names other_tasks counts (told apart by a 61-bit hash under a key
  /// drawn at random for each summary: two names count as one with a chance below 10^-16 a pair,
  /// whatever the trace; the names themselves are not kept).
  std::size_t other_task_names = 0;
  bool tasks_folded() const { return other_tasks.calls + other_tasks.never_ran != 0; }
  StringTable strings;
  Counters counters;
  double begin = 0;                ///< the earliest ts (0 when there is no event)
  double end = 0;                  ///< the latest ts or ts + dur
  bool has_stats = false;          ///< the `stats` event: `stats` are its fields
  std::vector<StatRow> stats;      ///< from the stats event, else computed from the events
  bool truncated = false;          ///< a `trace truncated` event
  std::string truncated_max_bytes; ///< its args.max_bytes (JSON text)
  std::string truncated_error;     ///< its args.error (a string, cleaned): a write failed
  std::size_t queued_at_end = 0;   ///< `b` without its `e`
  std::size_t skipped = 0;         ///< events without the fields their kind needs
  std::size_t first_skipped_line = 0;
};

/// Longest text kept from the trace for a task name, a track label, a reason, a stats key or value;
/// for a message. A longer one is cut at a character boundary and ends in "…" (3 more bytes).
inline constexpr std::size_t max_name_bytes = 300;
inline constexpr std::size_t max_message_bytes = 2000;

/// Longest `id` string of a queue `b`/`e` event that is read: ferry writes numbers (the call), and
/// Chrome's "0x..." hex ids are at most 18 bytes. An event with a longer one is skipped (counted in
/// Summary::skipped), so that no id from the trace is kept whole however long it is.
inline constexpr std::size_t max_id_bytes = 64;

/// What a Summary keeps at most of what a trace can hold any number of. The defaults are what
/// `ferry report` uses; the fuzzer (tests/fuzz/trace_fuzz.hpp) also uses small ones (through
/// summary_limits(), as `ferry report` does), so that an input of a few KB reaches each cap.
struct SummaryLimits {
  /// Counter points kept; beyond, each of this many time buckets keeps its maxima (at least 1).
  std::size_t max_counter_points = 4000;
  std::size_t max_counter_series = 16;
  /// Rows of the stats event and of the `ferry` header; computed stats: the rows per error type
  /// and per exit reason stop here (the 7 fixed rows always come).
  std::size_t max_stat_rows = 500;
  /// What the page can draw (ReportLimits; `ferry report` gives the same numbers): only these are
  /// kept, so that memory does not grow with the trace. Tracks: the max_tracks lowest tids (a
  /// lower one replaces the highest). Slices and marks: those of the kept tracks, at most twice
  /// the cap, cut to the first by (time, file order) when they reach that. Failures: at most 4x
  /// the cap, cut to the first by time. Labels of tracks not kept: the last max_tracks named (for
  /// the failures list).
  std::size_t max_tracks = 2'000;
  std::size_t max_slices = 200'000;
  std::size_t max_marks = 100'000;
  std::size_t max_failures = 1'000;
  /// Task names counted on their own: the max_tasks smallest (the tasks table is in name order);
  /// the calls of the others are counted together (Summary::other_tasks). 300,000 distinct names
  /// of 212 bytes held 282 MB.
  std::size_t max_tasks = 2'000;
  /// The page's bytes (page_text_bytes()) of the texts of the calls and marks it draws
  /// (ReportLimits::max_text_bytes). Texts of kept calls and marks that a page of these caps would
  /// not show (past this many bytes, or of a call or mark it would not draw) and that no kept
  /// failure uses are let go (StringTable) whenever the texts held have grown by
  /// max(max_text_bytes / 4, text_check_bytes) since the last look: 100,000 calls of distinct
  /// 1.9 KB messages held 190 MB of them for a page that shows 16 MiB.
  std::size_t max_text_bytes = std::size_t{16} << 20;
  std::size_t text_check_bytes = std::size_t{1} << 20;
};

/// The slices of a track whose busy time is reckoned in start order are taken in a window of this
/// many: one that comes later than that after a slice that started after it is counted as it
/// comes (Summary::busy_out_of_order).
inline constexpr std::size_t busy_window = 32;

/// Builds a Summary from events handed over one at a time, then finish().
class SummaryBuilder {
 public:
  explicit SummaryBuilder(SummaryLimits limits = {});
  ~SummaryBuilder();
  SummaryBuilder(const SummaryBuilder&) = delete;
  SummaryBuilder& operator=(const SummaryBuilder&) = delete;

  void add(const rj::Value& event, std::size_t line);
  /// Sorts what was kept, matches queue waits to slices, walks each track's last busy-time window
  /// and reduces the counters; without a `stats` event, writes the stats rows from the counts
  /// made while reading (busy time and the counts are reckoned as events are read, in add()).
  Summary finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// The p-th percentile (0 < p <= 1) of sorted `values` by the nearest-rank method: the smallest
/// value with at least p of the values at or below it. 0 when empty.
double percentile(const std::vector<double>& sorted, double p);

/// The bytes `text` takes in the report page's JSON (report_html's writer: RapidJSON's escapes, then
/// '<', '>', '&' and DEL as \uXXXX and detail::escaped_on_terminal's characters as the text
/// \\uXXXX), quotes included: what ReportLimits::max_text_bytes counts.
std::size_t page_text_bytes(std::string_view text);

/// `text` as valid UTF-8 (each invalid byte becomes U+FFFD), cut to at most `max` bytes at a
/// character boundary, with "…" appended when cut.
std::string clean_text(std::string_view text, std::size_t max);

}  // namespace ferry::cli::trace
