// SPDX-License-Identifier: BSD-3-Clause
// `ferry report TRACE [-o FILE]`: one self-contained HTML page from a trace (issue 15, item 3).
//
// trace_reader splits the file into events (streaming, bounded nesting, a killed host's partial
// last line dropped), trace_summary computes what the page shows, report_html writes the page:
// the template of cli/report/ with the figures as JSON that cannot break out of its element.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>

#include "commands.hpp"
#include "platform/trust.hpp"
#include "report_html.hpp"
#include "trace_reader.hpp"
#include "trace_run.hpp"
#include "trace_summary.hpp"

namespace ferry::cli {

namespace fs = std::filesystem;

CLI::App* setup_report(CLI::App& app, ReportOptions& options) {
  CLI::App* sub = app.add_subcommand("report", "Write an HTML report of a trace: task stream, "
                                               "per-task table, worker utilisation, stats");
  sub->add_option("TRACE", options.trace,
                  "a trace file, as ferry run/map --trace, FERRY_TRACE or ExecutorOptions::trace write it")
      ->type_name("")
      ->required();
  sub->add_option("-o,--output", options.output,
                  wrap("the HTML file to write (default: TRACE with the extension .html); - for stdout"))
      ->type_name("FILE");
  sub->add_option("--max-slices", options.max_slices,
                  wrap("draw at most N calls in the task stream, the first by start time (the "
                       "tables count all of them)"))
      ->type_name("N")
      ->check(whole_number_in(1, 100'000'000));
  sub->footer(
      wrap("Reads a trace (docs/trace-format.md) and writes one HTML page that needs nothing "
           "else: no network, no external file. It shows the task stream (one row per worker, "
           "a slice per call coloured by task, failed calls outlined and hatched, worker start, "
           "exit and crash marks; hover for the call), a table per task name (calls, items, p50 "
           "/ p90 / max duration, queue wait, failures), each worker's busy time over its "
           "lifetime, the stats (from the trace's stats event, or computed from its events when "
           "the host did not shut down cleanly), and the failures with their messages.",
           100) +
      "\n\n" +
      wrap("A trace from a host that crashed or was killed is read as far as it goes: the closing "
           "']' may be missing and an incomplete last line is dropped (the page says so); a line "
           "cut short anywhere else is an error that names it. The "
           "page is safe to open for a trace of an untrusted run: what the trace says is only "
           "ever shown as text, and the page's Content-Security-Policy lets only its own script "
           "run.",
           100) +
      "\n\n" +
      wrap("For a file of FERRY_TRACE (NAME.EXT, NAME.2.EXT...), the page names the run of the "
           "program it is of (process, host, start), the files of that run beside it in their "
           "order, and the files of its names that an earlier run left (only the trace owner's "
           "files, not links, are read: their first 16 KB).",
           100) +
      "\n\nExamples:\n"
      "  ferry map --trace run.trace square in.jsonl > out.jsonl\n"
      "  ferry report run.trace                    writes run.html\n"
      "  ferry report run.trace -o /tmp/report.html\n\n" +
      exit_codes_help("01", "the report could not be written") +
      "  2  usage error, or TRACE cannot be read or is not a trace (the message names the file and "
      "line)\n");
  return sub;
}

namespace {

/// Writes the page to a temporary file beside `output`, then renames it: a reader never sees a
/// half-written report, and a failed run leaves the previous one. Never through another user's
/// link on the way, nor into a directory another user could swap (untrusted_way_reason: the
/// rename put the page over whatever file of that name the link's target held).
bool write_file(const fs::path& output, const std::function<bool(std::FILE*)>& write, std::string& error) {
  if (std::string why = ferry::detail::untrusted_way_reason(output); !why.empty()) {
    error = "refusing to write there: " + why;
    return false;
  }
  fs::path dir = output.parent_path().empty() ? fs::path(".") : output.parent_path();
  // Named after the page, as far as a name may be long (255 bytes on the usual file systems): a
  // page named near that length failed with "cannot create a file in DIR: File name too long",
  // and so did the default for a trace named so.
  constexpr std::size_t max_kept = 200;
  std::string tmp = (dir / ("." + output.filename().string().substr(0, max_kept) + ".XXXXXX")).string();
  int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) {
    error = "cannot create a file in " + dir.string() + ": " + std::strerror(errno);
    return false;
  }
  // mkostemp makes it 0600, and so it stays: the page holds what the trace does (task names,
  // error messages, host names), and ferry writes traces 0600. Sharing it is the user's chmod.
  std::FILE* f = ::fdopen(fd, "w");
  if (!f) {
    error = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return false;
  }
  // The first failure's errno: a short write (ENOSPC), else the close, else the rename.
  errno = 0;
  bool ok = write(f);
  int saved = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (ok && std::rename(tmp.c_str(), output.c_str()) != 0) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    error = saved ? std::strerror(saved) : "write error";
  }
  return ok;
}

/// "FILE: message" for an error or note of the trace: the file's name as terminal_line() shows
/// it, the message as it is but for what terminal_line() escapes, as long as it escapes no
/// backslash: what the message quotes of the trace is escaped already (trace::printable: other
/// bytes than printable ASCII, the backslash too, as \xNN), and a second pass would double its
/// escapes ("\\x7fELF").
std::string trace_message(std::string_view file, std::string_view message) {
  std::string shown = terminal_line(file) + ": ";
  for (std::size_t at = 0;;) {
    const std::size_t backslash = message.find('\\', at);
    shown += terminal_line(message.substr(at, backslash - at));
    if (backslash == std::string_view::npos) return shown;
    shown += '\\';
    at = backslash + 1;
  }
}

}  // namespace

int run_report(const ReportOptions& options, const GlobalOptions& /*global*/) {
  const fs::path trace_path = options.trace;
  fs::path output = options.output;
  if (output.empty()) {
    // TRACE with .html for its extension; a number is no extension: FERRY_TRACE=DIR/trace names
    // its files trace, trace.2, trace.3..., each of which gets a page of its own.
    output = trace_path;
    const std::string extension = output.extension().string();
    const bool numbered = extension.size() > 1 && extension.find_first_not_of("0123456789", 1) == std::string::npos;
    if (numbered) {
      output += ".html";
    } else {
      output.replace_extension(".html");
    }
  }
  std::error_code ec;
  if (output != "-" && fs::equivalent(trace_path, output, ec)) {
    print_error("report", options.trace + ": the report would overwrite the trace; choose another file with -o");
    return exit_usage;
  }

  // The summary keeps what the page can draw (and counts the rest): its memory does not grow with
  // the trace's tracks, marks or texts (of the texts it keeps those the page shows, with the
  // page's max_text_bytes). The builder goes once the summary is made: what it kept while reading
  // (its text table's places, every call's number for the queue waits) is not needed for the page.
  trace::ReportLimits limits;
  if (options.max_slices) limits.max_slices = options.max_slices;
  trace::ReadResult read;
  auto builder = std::make_unique<trace::SummaryBuilder>(trace::summary_limits(limits));
  // Events without a phase ("ph") are in no trace's format: a file of nothing else is some other
  // JSON array of objects (the wrong file given), not a trace with a few odd events.
  std::size_t events = 0, without_phase = 0, first_without_phase = 0;
  bool ok = trace::read_trace(
      trace_path,
      [&](const rj::Value& event, std::size_t line) {
        ++events;
        if (!event.IsObject() || !event.HasMember("ph")) {
          if (without_phase++ == 0) first_without_phase = line;
        }
        builder->add(event, line);
      },
      read);
  if (ok && events != 0 && without_phase == events) {
    read.error_line = first_without_phase;
    read.error = "not a trace file: none of its " + std::to_string(events) +
                 " objects has a \"ph\" (an event's phase in the Chrome Trace Event format)";
    ok = false;
  }
  if (!ok) {
    print_shown_error("report", trace_message(options.trace + (read.error_line ? ":" + std::to_string(read.error_line) : ""),
                                              read.error));
    return exit_usage;
  }
  const trace::Summary summary = builder->finish();
  builder.reset();
  const trace::Page page(summary, limits);
  std::vector<trace::Note> notes = trace::report_notes(read, page);
  // A file of FERRY_TRACE: which run it is of, and which files beside it are of other runs.
  if (std::optional<std::string> run = trace::run_note(trace_path)) notes.insert(notes.begin(), {*run, false});
  for (const auto& note : notes)
    if (note.bad) print_shown_error("report", trace_message(options.trace, note.text));

  auto write = [&](std::FILE* f) {
    return trace::write_report_html(f, trace_path.filename().string(), "ferry " + std::string(ferry::version()),
                                    page, notes);
  };
  if (output == "-") {
    if (!write(cli::output()) || std::fflush(cli::output()) != 0) {
      print_error("report", std::string("cannot write the report to stdout: ") + std::strerror(errno));
      return exit_task_failed;
    }
    return exit_ok;
  }
  std::string error;
  if (!write_file(output, write, error)) {
    print_error("report", "cannot write " + output.string() + ": " + error);
    return exit_task_failed;
  }
  std::size_t failed = summary.other_tasks.failed, never_ran = summary.other_tasks.never_ran;
  for (const auto& task : summary.tasks) {
    failed += task.failed;
    never_ran += task.never_ran;
  }
  // The name is the trace's (ferry report *.trace): shown as text.
  const std::string shown = terminal_line(output.string());
  std::fprintf(cli::output(), "%s: %zu calls on %zu workers (%zu failed, %zu never ran)\n", shown.c_str(),
               summary.slices_total, summary.tracks_total, failed, never_ran);
  if (page.other_tasks) {
    // The summary keeps the figures of the first task names only: the others are one row.
    std::fprintf(cli::output(),
                 "%s: task names past the first %zu by name folded into one row (%zu names, %zu calls, %zu never ran)\n",
                 shown.c_str(), page.tasks.size(), page.other_task_names, page.other_tasks->calls,
                 page.other_tasks->never_ran);
  }
  return finish_output("report", cli::output(), exit_ok);
}

}  // namespace ferry::cli
