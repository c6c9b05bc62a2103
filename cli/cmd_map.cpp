// SPDX-License-Identifier: BSD-3-Clause
// `ferry map TASK [FILE]`: JSON Lines of arguments in, one JSON result line per input line out.
//
// The input is cut into chunks of at most --chunksize lines; each chunk travels as one message and
// runs as one worker call (Executor::submit_json with `items` lines). At most 2 * workers + 2
// chunks are in flight: memory stays bounded however long the input is. Results are printed in
// input order, a chunk as soon as it and every chunk before it have ended.
//
// One thread: it reads the input only while that cannot block (a chunk goes out early when the
// input stalls, so a slow producer still streams), and otherwise sleeps in poll() on the input and
// on an eventfd that every chunk's completion signals.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>
#include <ferry/detail/progress.hpp>

#include "commands.hpp"
#include "json.hpp"

namespace ferry::cli {

namespace fs = std::filesystem;

CLI::App* setup_map(CLI::App& app, MapOptions& options) {
  CLI::App* sub = app.add_subcommand(
      "map", "Run a task on every line of JSON Lines input, in parallel, results in order");
  sub->add_option("TASK", options.task, "task name, or plugin:task to choose among plugins")
      ->type_name("")
      ->required();
  sub->add_option("FILE", options.file, "JSON Lines input; default or -: stdin")->type_name("");
  sub->add_option("-j,--workers", options.workers,
                  "worker processes (default: the global -j; 0 or absent: cpu_count() = " +
                      std::to_string(cpu_count()) + ")")
      ->type_name("N")
      ->check(CLI::Range(std::size_t{0}, std::size_t{4096}));
  sub->add_option("--chunksize", options.chunksize,
                  wrap("input lines per message and worker call (default: about 4 chunks per "
                       "worker, at most 1024 lines)"))
      ->type_name("N")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20));
  sub->add_flag("--keep-going", options.keep_going,
                wrap("a line that fails gets its {\"error\": {\"type\", \"message\", "
                     "\"stage\"}} object as its output line and the run goes on; exit status 1 "
                     "at the end. The lines of a chunk whose worker died are run again one by one, "
                     "so that only the line that kills its worker fails"));
  sub->add_flag("--no-progress", options.no_progress,
                wrap("no progress bar. The bar (done/total lines, lines/s, ETA) is drawn on stderr "
                     "only when stderr is a terminal"));
  add_containment_options(*sub, options.containment);
  add_trace_option(*sub, options.containment);
  sub->footer(
      wrap("Reads JSON Lines of arguments from FILE or stdin and writes one JSON line per input "
           "line on stdout, in input order: the task's result (null for a void task). An input "
           "line is a JSON array of the arguments ([40, 2]), an object already in argument form "
           "({\"value0\": 40, \"value1\": 2}, members in any order), or, for a task of one parameter, any other JSON "
           "value (7, \"text\"); an array argument of a one-parameter task is written [[1, 2]]. "
           "Output line N always answers input line N: a blank line is an error, like a line that "
           "is not JSON (a task without parameters takes []). JSON nested deeper than " +
               std::to_string(detail::max_json_depth) +
               " levels is refused. Lines travel in chunks (one message and one worker call "
           "each), a bounded number in flight; each chunk's results are printed as soon as it "
           "and the chunks before it have ended. When the input stalls (a slow producer on a "
           "pipe), the lines read so far go out at once as a smaller chunk.",
           100) +
      "\n\n" +
      wrap("Without --keep-going the first failure stops the run: the results of the chunks "
           "before it are printed, and the error goes to stderr with the input lines of its "
           "chunk. A line that is blank, is not JSON, or does not fit the task's parameters, stops "
           "it too (exit status 2).",
           100) +
      "\n\nExamples:\n"
      "  printf '[40, 2]\\n[1, 1]\\n' | ferry map add         prints 42 and 2\n"
      "  ferry map -j 4 --chunksize 100 square numbers.jsonl > squares.jsonl\n\n" +
      containment_options_help() + "\n" + global_options_help() + "\n" + exit_codes_help());
  return sub;
}

namespace {

/// A descriptor closed at scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

/// The lines of a descriptor, with their line numbers; tells whether the next line can be had
/// without blocking.
class Input {
 public:
  explicit Input(int fd) : fd_(fd) {}

  enum class Got { line, would_block, end };

  /// The next line (blank ones too: each input line has its output line). With `wait`, blocks
  /// until there is one (or the end); without, returns would_block when no whole line is
  /// buffered and the descriptor has nothing to read.
  Got next(std::string& line, std::size_t& number, bool wait) {
    for (;;) {
      // The search resumes where the last one stopped: rescanning from the line's start after
      // every read made a line of n bytes cost n^2 / 64 KiB (100 MB: 21 s; 1 GB: hours).
      auto nl = buffer_.find('\n', searched_);
      if (nl != std::string::npos || (end_ && pos_ < buffer_.size())) {
        std::size_t stop = nl == std::string::npos ? buffer_.size() : nl;
        line.assign(buffer_, pos_, stop - pos_);
        pos_ = searched_ = nl == std::string::npos ? buffer_.size() : nl + 1;
        number = ++line_;
        return Got::line;
      }
      searched_ = buffer_.size();
      if (end_) return Got::end;
      if (!wait && !readable(0)) return Got::would_block;
      fill();
    }
  }

  /// True when a read() would not block (data or end of input), waiting up to `timeout_ms`.
  bool readable(int timeout_ms) const {
    pollfd p{fd_, POLLIN, 0};
    int n;
    do {
      n = ::poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    return n != 0;  // an error counts as readable: the read reports it
  }

  int fd() const { return fd_; }
  /// The read error that ended the input, or 0.
  int error() const { return error_; }

  /// Lines from here to the end, then back here (a regular file); nullopt if the descriptor
  /// cannot seek. Counts newlines as it reads: no line is held, however long.
  std::optional<std::size_t> count_and_rewind() {
    off_t start = ::lseek(fd_, 0, SEEK_CUR);
    if (start < 0) return std::nullopt;
    std::size_t n = 0;
    bool partial = false;  // a last line without its newline counts too
    std::vector<char> chunk(std::size_t{1} << 20);
    for (;;) {
      ssize_t got = ::read(fd_, chunk.data(), chunk.size());
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;  // a read error shows again when the lines are read
      auto bytes = static_cast<std::size_t>(got);
      n += static_cast<std::size_t>(std::count(chunk.data(), chunk.data() + bytes, '\n'));
      partial = chunk[bytes - 1] != '\n';
    }
    if (partial) ++n;
    if (::lseek(fd_, start, SEEK_SET) != start) return std::nullopt;
    return n;
  }

 private:
  void fill() {
    if (pos_ > 0 && pos_ >= buffer_.size() / 2) {
      buffer_.erase(0, pos_);
      searched_ -= pos_;
      pos_ = 0;
    }
    char chunk[65536];
    ssize_t n;
    do {
      n = ::read(fd_, chunk, sizeof chunk);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));  // amortised linear, however long the line
    } else {
      if (n < 0) error_ = errno;
      end_ = true;
    }
  }

  int fd_;
  std::string buffer_;
  std::size_t pos_ = 0;       ///< where the next line starts in buffer_
  std::size_t searched_ = 0;  ///< buffer_ holds no '\n' from pos_ up to here
  std::size_t line_ = 0;
  bool end_ = false;
  int error_ = 0;
};

/// A chunk of input lines and its submission.
struct Chunk {
  struct Line {
    std::size_t number;
    std::string error;  ///< not empty: the line could not be read (an error line, --keep-going)
  };
  std::vector<Line> lines;
  std::string text;       ///< the argument objects of the readable lines, one per line
  std::uint32_t items = 0;
  Future<std::string> future;
  std::string kept;       ///< a copy of `text` for a rerun (--keep-going only)

  std::size_t first() const { return lines.front().number; }
  std::size_t last() const { return lines.back().number; }
  bool ready() const { return items == 0 || future.ready(); }
};

std::vector<std::string_view> split_lines(std::string_view s) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto nl = s.find('\n');
    out.push_back(s.substr(0, nl));
    s.remove_prefix(nl == std::string_view::npos ? s.size() : nl + 1);
  }
  return out;
}

/// A worker's result line as the output line: the result value, null for void, or the error
/// object as is. Sets `failed` for an error object.
std::string output_line(std::string_view result, bool& failed) {
  rj::Document doc;
  std::string error;
  if (!json::parse(result, doc, error) || !doc.IsObject())
    throw std::runtime_error("the worker's result line is not a JSON object: " + std::string(result));
  if (auto it = doc.FindMember("error"); it != doc.MemberEnd()) {
    failed = true;
    return json::write(doc);
  }
  auto it = doc.FindMember("value0");
  return it == doc.MemberEnd() ? std::string("null") : json::write(it->value);
}

std::string lines_text(const Chunk& c) {
  return c.first() == c.last() ? "line " + std::to_string(c.first())
                               : "lines " + std::to_string(c.first()) + "-" + std::to_string(c.last());
}

}  // namespace

int run_map(const MapOptions& options, const GlobalOptions& global) {
  TaskInfo info;
  try {
    info = find_task(global, options.task);
  } catch (...) {
    return report("map", describe(std::current_exception()));
  }

  const bool from_file = !options.file.empty() && options.file != "-";
  Fd file;
  if (from_file) {
    file.fd = ::open(options.file.c_str(), O_RDONLY | O_CLOEXEC);
    if (file.fd < 0) {
      print_error("map", "cannot open " + options.file + ": " + std::strerror(errno));
      return exit_usage;
    }
  }
  Stdio io = isolate_stdio(/*take_stdin=*/!from_file);
  Input input(from_file ? file.fd : io.in);
  const std::optional<std::size_t> arity = signature_arity(info.signature);
  const std::size_t workers =
      options.workers ? options.workers : global.workers ? global.workers : cpu_count();

  // The total, for the progress bar and the default chunk size. A regular file (FILE, or stdin
  // redirected from one) is counted first; not a pipe, which the count would consume. Of a pipe,
  // without --chunksize, what is there is read ahead, up to every worker's four chunks of 1024
  // lines: if the input ends within that, its size is known.
  std::optional<std::size_t> total;
  std::deque<std::pair<std::size_t, std::string>> ahead;
  struct stat st {};
  if (::fstat(input.fd(), &st) == 0 && S_ISREG(st.st_mode)) {
    total = input.count_and_rewind();
  } else if (options.chunksize == 0) {
    std::string line;
    std::size_t number = 0;
    Input::Got got = Input::Got::line;
    while (ahead.size() < 4 * workers * 1024 &&
           (got = input.next(line, number, /*wait=*/ahead.empty())) == Input::Got::line)
      ahead.emplace_back(number, std::move(line));
    if (got == Input::Got::end) total = ahead.size();
  }
  std::size_t chunksize = options.chunksize;
  if (chunksize == 0) {
    chunksize = total ? std::clamp<std::size_t>((*total + 4 * workers - 1) / (4 * workers), 1, 1024)
                      : 1024;
  }
  const std::size_t max_in_flight = 2 * workers + 2;

  // Signalled by every chunk's completion (declared before the executor: it outlives the
  // callbacks, which all run before the executor is gone).
  Fd done_signal(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (done_signal.fd < 0) {
    print_error("map", std::string("eventfd: ") + std::strerror(errno));
    return exit_task_failed;
  }

  try {
    Executor executor(executor_options(global, workers, options.containment));
    const TaskRef ref{.library = info.library, .name = info.name};
    ferry::detail::ProgressBar progress(::isatty(STDERR_FILENO) == 1 && !options.no_progress, total, "lines");
    // Results and the bar on the same terminal: the bar steps aside while results are written.
    const bool shared_terminal = progress.enabled() && ::isatty(::fileno(io.out)) == 1;
    std::deque<Chunk> flight;
    bool ended = false;                      // end of input, or stopped at an unreadable line
    std::optional<std::string> input_error;  // the first unreadable line, without --keep-going
    std::size_t done = 0;
    bool any_failed = false;

    auto next_line = [&](std::string& line, std::size_t& number, bool wait) {
      if (!ahead.empty()) {
        number = ahead.front().first;
        line = std::move(ahead.front().second);
        ahead.pop_front();
        return Input::Got::line;
      }
      return input.next(line, number, wait);
    };
    // Reads up to a chunk of lines into `c`. It blocks only for the first line and only if
    // `wait`; after that, a stall of the input ends the chunk early. False when nothing more
    // can be read without blocking.
    auto read_chunk = [&](Chunk& c, bool wait) {
      std::string line;
      std::size_t number = 0;
      while (c.lines.size() < chunksize) {
        Input::Got got = next_line(line, number, wait && c.lines.empty());
        if (got == Input::Got::would_block) return false;
        if (got == Input::Got::end) {
          ended = true;
          return false;
        }
        std::string error;
        if (json::append_line_arguments(c.text, line, arity, info.name, error)) {
          c.lines.push_back({number, {}});
          ++c.items;
        } else if (options.keep_going) {
          any_failed = true;
          c.lines.push_back({number, json::error_line("BadInput", "line " + std::to_string(number) +
                                                                      ": " + error,
                                                      "read_input")});
        } else {
          input_error = "line " + std::to_string(number) + ": " + error;
          ended = true;
          return false;
        }
      }
      return true;
    };
    // Reads and submits while there is room in flight and input to be had without blocking
    // (blocking is fine when nothing is in flight: there is nothing else to do).
    auto fill = [&] {
      bool more = true;
      while (more && !ended && flight.size() < max_in_flight) {
        Chunk c;
        more = read_chunk(c, /*wait=*/flight.empty());
        if (c.lines.empty()) break;
        if (c.items) {
          if (options.keep_going) c.kept = c.text;
          c.future = executor.submit_json(ref, std::move(c.text), c.items, options.keep_going);
          c.future.then([fd = done_signal.fd](const Future<std::string>&) {
            std::uint64_t one = 1;
            [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
          });
        }
        flight.push_back(std::move(c));
      }
    };
    auto shown = [&] {
      std::size_t n = done;
      for (const auto& c : flight)
        if (c.ready()) n += c.lines.size();
      return n;
    };
    auto stop = [&](const std::string& where, const Failure& failure) {
      progress.clear();
      print_error("map", where + ": " + failure.type + ": " + failure.message);
      print_remote_stack(failure);
      executor.shutdown({.wait = false, .kill_workers = true});
      return failure.code;
    };

    progress.update(0, true);
    for (;;) {
      fill();
      if (flight.empty()) break;  // fill() blocks when nothing is in flight: the input ended
      Chunk& c = flight.front();
      if (!c.ready()) {
        // Sleep until a chunk ends or, while there is room in flight, input arrives.
        pollfd fds[2] = {{done_signal.fd, POLLIN, 0}, {input.fd(), POLLIN, 0}};
        bool watch_input = !ended && flight.size() < max_in_flight;
        int n = ::poll(fds, watch_input ? 2 : 1, progress.enabled() ? 100 : -1);
        if (n > 0 && (fds[0].revents & POLLIN)) {
          std::uint64_t count;
          [[maybe_unused]] ssize_t r = ::read(done_signal.fd, &count, sizeof count);
        }
        progress.update(shown());
        continue;
      }

      std::vector<std::string> results;  // one per readable line of the chunk
      if (c.items) {
        try {
          std::string text = c.future.get();
          for (auto l : split_lines(text)) results.emplace_back(l);
          if (results.size() != c.items)
            throw std::runtime_error("the worker returned " + std::to_string(results.size()) +
                                     " result lines for " + std::to_string(c.items));
        } catch (...) {
          Failure failure = describe(std::current_exception());
          bool fatal = failure.code == exit_lookup || failure.code == exit_pool;
          if (!options.keep_going || fatal) return stop(lines_text(c), failure);
          // The whole chunk failed (its worker died, say): run its lines again one by one, so
          // that only the line at fault gets an error.
          results.clear();
          std::vector<Future<std::string>> singles;
          for (auto l : split_lines(c.kept))
            singles.push_back(executor.submit_json(ref, std::string(l), 1, true));
          for (auto& f : singles) {
            try {
              std::string r = f.get();
              while (!r.empty() && r.back() == '\n') r.pop_back();
              results.push_back(std::move(r));
            } catch (...) {
              Failure one = describe(std::current_exception());
              if (one.code == exit_lookup || one.code == exit_pool) return stop(lines_text(c), one);
              results.push_back(json::error_line("ferry::" + one.type, one.message, "task"));
            }
          }
        }
      }

      std::string out;
      std::size_t next = 0;
      for (const auto& line : c.lines) {
        if (!line.error.empty()) {
          out += line.error;
        } else {
          bool failed = false;
          try {
            out += output_line(results[next++], failed);
          } catch (...) {
            return stop("line " + std::to_string(line.number), describe(std::current_exception()));
          }
          if (failed) any_failed = true;
        }
        out += '\n';
      }
      if (shared_terminal) progress.clear();
      std::fwrite(out.data(), 1, out.size(), io.out);
      std::fflush(io.out);
      done += c.lines.size();
      flight.pop_front();
      progress.update(shown());
    }
    progress.finish(done);

    if (std::ferror(io.out)) {
      print_error("map", "cannot write the results: " + std::string(std::strerror(errno)));
      return exit_task_failed;
    }
    if (input.error()) {
      print_error("map", "cannot read the input: " + std::string(std::strerror(input.error())));
      return exit_usage;
    }
    if (input_error) {
      print_error("map", *input_error);
      return exit_usage;
    }
    return any_failed ? exit_task_failed : exit_ok;
  } catch (...) {
    return report("map", describe(std::current_exception()));
  }
}

}  // namespace ferry::cli
