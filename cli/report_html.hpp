// SPDX-License-Identifier: BSD-3-Clause
// The report page: the template of cli/report/ with a trace's Summary embedded as JSON.
#pragma once

#include <cstddef>
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
  /// Task names listed: the first max_tasks by name, and those of the calls drawn and the failures
  /// listed (300,000 names made a page of 128 MB that Chromium took 57 s to show; it lists 2,000).
  std::size_t max_tasks = 2'000;
};

/// The summary's limits that keep what a page of `limits` draws (and the other defaults).
inline SummaryLimits summary_limits(const ReportLimits& limits, SummaryLimits base = {}) {
  base.max_tracks = limits.max_tracks;
  base.max_slices = limits.max_slices;
  base.max_marks = limits.max_marks;
  base.max_failures = limits.max_failures;
  return base;
}

/// Something the reader of the report should know about the trace, shown at the top of the page.
struct Note {
  std::string text;
  bool bad = false;  ///< data is missing (dropped, truncated), not just a remark
};

/// The notes of a trace: how it ended, what was dropped or skipped, what is not drawn.
std::vector<Note> report_notes(const ReadResult& read, const Summary& summary, const ReportLimits& limits);

/**
@brief Writes the report page to `out`: the template with the figures of `summary` embedded as
JSON in which every '<', '>' and '&' is escaped (\u003c...), so that no text from the trace can
close the script element or start markup, and so are DEL, the C1 controls, the bidirectional
controls and the line and paragraph separators (\u007f, \u0080...\u009f, \u202e, \u2028...), so
that the page written to a terminal holds no control character.
`file` (the trace's name) and `generator` (what wrote the page: "ferry VERSION") head the page.
@return false when writing failed (errno set by stdio).
*/
bool write_report_html(std::FILE* out, std::string_view file, std::string_view generator, const Summary& summary,
                       const std::vector<Note>& notes, const ReportLimits& limits);

}  // namespace ferry::cli::trace
