// SPDX-License-Identifier: BSD-3-Clause
// The report page: the template of cli/report/ with a trace's Summary embedded as JSON.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "trace_reader.hpp"
#include "trace_summary.hpp"

namespace ferry::cli::trace {

/// What the page draws at most: beyond, it says how many it left out (the tables count all).
struct ReportLimits {
  std::size_t max_slices = 200'000;
  std::size_t max_tracks = 2'000;
  std::size_t max_marks = 100'000;
  std::size_t max_failures = 1'000;
  /// Task names listed: the first max_tasks by name; the calls of the others are one row, "other
  /// task names", and a failure listed of one of them names it. 300,000 names made a page of
  /// 128 MB that Chromium took 57 s to show, and 200,000 calls drawn of as many names (each
  /// listed for its call) one of 80 MB.
  std::size_t max_tasks = 2'000;
  /// Bytes (as the page's JSON writes them) of the texts of the calls and marks drawn (errors,
  /// messages, first inputs, reasons) that are not also a failure's listed: beyond, a call or mark
  /// is drawn with the text "(left out ...)" instead. 100,000 failed calls of distinct 1.9 KB
  /// messages made a page of 197 MB.
  std::size_t max_text_bytes = std::size_t{16} << 20;
};

/// The summary's limits that keep what a page of `limits` draws (and the other defaults).
inline SummaryLimits summary_limits(const ReportLimits& limits, SummaryLimits base = {}) {
  base.max_tracks = limits.max_tracks;
  base.max_slices = limits.max_slices;
  base.max_marks = limits.max_marks;
  base.max_failures = limits.max_failures;
  base.max_tasks = limits.max_tasks;
  base.max_text_bytes = limits.max_text_bytes;
  return base;
}

/// Something the reader of the report should know about the trace, shown at the top of the page.
struct Note {
  std::string text;
  bool bad = false;  ///< data is missing (dropped, truncated), not just a remark
};

/// What the page of a Summary shows under ReportLimits, chosen once for the notes and the page:
/// the tracks, slices and marks it draws, the failures it lists, the task rows, and the texts
/// those refer to, renumbered (so that a trace of a million failed calls does not put a million
/// messages into the page). Points into the Summary, which must outlive it.
class Page {
 public:
  Page(const Summary& summary, const ReportLimits& limits);
  Page(const Page&) = delete;
  Page& operator=(const Page&) = delete;

  const Summary& summary;
  const ReportLimits limits;
  std::size_t tracks = 0;                ///< the first tracks of the Summary's
  std::vector<const Slice*> slices;      ///< the first max_slices of those tracks, by start time
  std::vector<const Mark*> marks;
  std::vector<const Failure*> failures;
  std::vector<const std::string*> strings;  ///< the page's texts, by its index
  std::vector<const TaskFigures*> tasks;    ///< the rows listed: the first max_tasks by name
  /// The calls of the other task names (the Summary's other_tasks, and its rows past max_tasks),
  /// the page's last task row; null when there are none.
  const TaskFigures* other_tasks = nullptr;
  /// How many distinct task names other_tasks counts (Summary::other_task_names, and the names of
  /// the Summary's rows past those listed).
  std::size_t other_task_names = 0;
  /// Calls and marks drawn with a text left out for max_text_bytes.
  std::size_t texts_left_out_slices = 0, texts_left_out_marks = 0;
  /// Texts the summary let go (StringTable) that would have fit in max_text_bytes where the page
  /// met them: left out all the same (a trace not in time order, or a page of other caps).
  std::size_t texts_let_go = 0;

  /// The page's index of the Summary's text `i` (-1: none).
  std::int64_t text(std::int32_t i) const;
  /// The page's row of the Summary's task `i` (Slice::task, Failure::task): its own, or the
  /// "other task names" row.
  std::int64_t task(std::uint32_t i) const;
  /// The page's index of the name of a failure's task that has no row of its own on the page, else -1.
  std::int64_t failure_task_name(const Failure& f) const;

 private:
  std::vector<std::int32_t> string_index_;      ///< Summary's string index → the page's
  std::vector<std::int32_t> task_name_index_;   ///< Summary's task row past those listed → the page's text
  std::int32_t left_out_index_ = -1;
  std::string left_out_text_;
  TaskFigures merged_others_;
};

/// The notes of a trace: how it ended, what was dropped or skipped, what is not drawn.
std::vector<Note> report_notes(const ReadResult& read, const Page& page);

/**
@brief Writes the report page to `out`: the template with what `page` shows of its Summary
embedded as JSON in which every '<', '>' and '&' is escaped (\u003c...), so that no text from the
trace can close the script element or start markup, and so is DEL (\u007f); the C1 controls, the
bidirectional controls and the line and paragraph separators (detail::escaped_on_terminal) are
written as text (\\u202e in the JSON, the six characters \u202e to JSON.parse), so that the page
written to a terminal holds no control character and the script shows each as that text.
`file` (the trace's name) and `generator` (what wrote the page: "ferry VERSION") head the page.
@return false when writing failed (errno set by stdio).
*/
bool write_report_html(std::FILE* out, std::string_view file, std::string_view generator, const Page& page,
                       const std::vector<Note>& notes);

}  // namespace ferry::cli::trace
