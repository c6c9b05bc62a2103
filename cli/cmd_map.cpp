// SPDX-License-Identifier: BSD-3-Clause
// `ferry map TASK [FILE]`: JSON Lines of arguments in, one JSON result line per input line out.
//
// The input is cut into chunks of at most --chunksize lines and --chunk-bytes of arguments; each
// chunk travels as one message and runs as one worker call (Executor::submit_json with `items`
// lines, and the index of its first line as a chunk of Executor::map has one: send_lines). The
// chunks go through ferry's map engine, the one behind Executor::imap (detail::MapRun): at most
// 2 * workers + 2 are in flight, and what was read and not yet written stays within as many
// chunks' bytes (ChunkReader), so memory stays bounded in lines and in bytes however long the
// input and its lines are (a line: --max-line-bytes); results come back in input
// order, a chunk as soon as it and every chunk before it have ended; --timeout and the progress
// bar are the engine's MapOptions::timeout and MapOptions::progress.
//
// A thread of its own reads the input (ChunkReader): a chunk is ready when full, or early when
// the input stalls, so a slow producer still streams; the engine waits for a chunk to end or for
// the reader to wake it.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>
#include <ferry/detail/deadline.hpp>
#include <ferry/detail/progress.hpp>
#include <ferry/detail/state.hpp>

#include "api/json_chunk.hpp"
#include "commands.hpp"
#include "json.hpp"
#include "platform/config.hpp"

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
                  wrap("worker processes (default: the global -j; 0 or absent: cpu_count() = " +
                       std::to_string(cpu_count()) +
                       "); no more than the input has chunks, when its lines are counted (a "
                       "file, or a pipe that ends within what is read ahead)"))
      ->type_name("N")
      ->check(whole_number_in(0, 4096));
  sub->add_option("--chunksize", options.chunksize,
                  wrap("input lines per message and worker call (default: about 4 chunks per "
                       "worker, at most 1024 lines)"))
      ->type_name("N")
      ->check(whole_number_in(1, std::size_t{1} << 20));
  sub->add_option("--chunk-bytes", options.chunk_bytes,
                  wrap("a chunk also closes once its lines hold SIZE bytes of arguments (SIZE as "
                       "--memory; default 4M). Memory is bounded by it: what was read and not "
                       "yet written out stays within 2 * workers + 2 such chunks, or one line per "
                       "worker and one more when lines are longer"))
      ->type_name("SIZE")
      ->transform(size_transform());
  sub->add_option("--max-line-bytes", options.max_line_bytes,
                  wrap("the longest input line taken (SIZE: 64K, 512M, ... as --memory; default: "
                       "the largest message ferry takes, FERRY_MAX_FRAME_BYTES, 1G). A longer line "
                       "is an error (exit status 2; an error line with --keep-going) and is never "
                       "held in memory whole"))
      ->type_name("SIZE")
      ->transform(size_transform());
  sub->add_flag("--keep-going", options.keep_going,
                wrap("a line that fails gets its {\"error\": {\"type\", \"message\", "
                     "\"stage\"}} object as its output line and the run goes on; exit status 1 "
                     "at the end. The lines of a chunk whose worker died are run again one by one, "
                     "so that only the line that kills its worker fails"));
  sub->add_option("--timeout", options.timeout,
                  wrap("seconds the whole map may take, from the start (waiting for the input "
                       "included); then the lines not done are cancelled (running ones killed) and "
                       "it ends with TimeoutError, exit status 1, after the results before them "
                       "were written; inf: no limit"))
      ->type_name("SECONDS")
      ->check(seconds_check());
  sub->add_flag("--no-progress", options.no_progress,
                wrap("no progress bar. The bar (done/total lines, lines/s, ETA) is drawn on stderr "
                     "only when stderr is a terminal"));
  add_containment_options(*sub, options.containment);
  add_trace_option(*sub, options.containment);
  add_initializer_options(*sub, options.containment);
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
/// without blocking. A line longer than `max_line` bytes is never held: it is reported as too long
/// as soon as that many bytes of it were read, and the rest of it is dropped as it comes.
class Input {
 public:
  Input(int fd, std::size_t max_line)
      : fd_(fd), max_line_(max_line), cancel_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (cancel_.fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }

  enum class Got { line, too_long, would_block, end };

  /// The next line (blank ones too: each input line has its output line), or too_long with its
  /// number (`line` empty). With `wait`, blocks until there is one (or the end, or cancel(), or
  /// `until`); without, or once `until` has passed, returns would_block when no whole line is
  /// buffered and the descriptor has nothing to read.
  Got next(std::string& line, std::size_t& number, bool wait,
           detail::Clock::time_point until = detail::Clock::time_point::max()) {
    for (;;) {
      // The search resumes where the last one stopped: rescanning from the line's start after
      // every read made a line of n bytes cost n^2 / 64 KiB (100 MB: 21 s; 1 GB: hours).
      auto nl = std::string_view(buffer_.data(), buffer_.size()).find('\n', searched_);
      if (skipping_) {  // the rest of a line that was too long
        if (nl == std::string::npos) {
          buffer_.clear();
          pos_ = searched_ = 0;
        } else {
          pos_ = searched_ = nl + 1;
          skipping_ = false;
          continue;
        }
      } else if ((nl == std::string::npos ? buffer_.size() : nl) - pos_ > max_line_) {
        line.clear();
        number = ++line_;
        if (nl == std::string::npos) {
          buffer_.clear();
          pos_ = searched_ = 0;
          skipping_ = true;
        } else {
          pos_ = searched_ = nl + 1;
        }
        return Got::too_long;
      } else if (nl != std::string::npos || (end_ && pos_ < buffer_.size())) {
        std::size_t stop = nl == std::string::npos ? buffer_.size() : nl;
        line.assign(buffer_.data() + pos_, stop - pos_);
        pos_ = searched_ = nl == std::string::npos ? buffer_.size() : nl + 1;
        number = ++line_;
        // A long line's buffer, all read now, is given back: kept, it held a copy of the line
        // (pages written stay the process's) while the line was converted and run.
        if (pos_ == buffer_.size() && buffer_.capacity() > release_above) {
          std::vector<char>().swap(buffer_);
          pos_ = searched_ = 0;
        }
        return Got::line;
      } else {
        searched_ = buffer_.size();
      }
      if (end_) return Got::end;
      const Ready ready = readable(wait, until);
      if (ready == Ready::cancelled && wait) {
        end_ = true;
        continue;
      }
      if (ready != Ready::yes) return Got::would_block;
      fill();
    }
  }

  enum class Ready { yes, timed_out, cancelled };

  /// Whether a read() would not block (data or end of input): with `wait`, waits for it until
  /// `until` (max: no limit); cancelled at once after cancel().
  Ready readable(bool wait, detail::Clock::time_point until = detail::Clock::time_point::max()) const {
    pollfd p[2] = {{fd_, POLLIN, 0}, {cancel_.fd, POLLIN, 0}};
    for (;;) {
      int timeout_ms = wait ? -1 : 0;
      if (wait && until != detail::Clock::time_point::max()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - detail::Clock::now()).count();
        timeout_ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, std::numeric_limits<int>::max()));
      }
      const int n = ::poll(p, 2, timeout_ms);
      if (n < 0 && errno == EINTR) continue;
      if (n > 0 && p[1].revents) return Ready::cancelled;
      if (n != 0) return Ready::yes;  // an error counts as readable: the read reports it
      if (timeout_ms == 0) return Ready::timed_out;
      // poll may wake a little early on its millisecond clock: then it waits again for the rest.
    }
  }

  /// Ends a wait in next() or readable(), from any thread.
  void cancel() {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(cancel_.fd, &one, sizeof one);
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
    char chunk[65536];
    ssize_t n;
    do {
      n = ::read(fd_, chunk, sizeof chunk);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      if (n < 0) error_ = errno;
      end_ = true;
      return;
    }
    const auto got = static_cast<std::size_t>(n);
    // What precedes pos_ is gone: dropped when it is half the buffer (amortised linear), or
    // before the buffer would grow.
    if (pos_ > 0 && (pos_ >= buffer_.size() / 2 || buffer_.size() + got > buffer_.capacity())) {
      buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos_));
      searched_ -= pos_;
      pos_ = 0;
    }
    // The buffer holds a part of one line (next() takes the whole ones first), at most max_line_
    // bytes before it is refused, and one read. It grows by doubling, but once doubling comes
    // near that ceiling it goes there at once: a line near the limit costs the limit and the
    // buffer it outgrew (at most 2/3 of it), not twice the limit plus that. (A vector:
    // std::string's reserve doubles whatever it is asked.)
    if (const std::size_t need = buffer_.size() + got; need > buffer_.capacity()) {
      const std::size_t ceiling = max_line_ > std::numeric_limits<std::size_t>::max() / 4
                                      ? max_line_
                                      : max_line_ + 1 + sizeof chunk;
      std::size_t target = 2 * buffer_.capacity();
      if (target > ceiling / 3 * 2) target = ceiling;
      buffer_.reserve(std::max(need, target));
    }
    buffer_.insert(buffer_.end(), chunk, chunk + got);
  }

  /// A buffer larger than this is freed once all it holds was read (a long line's).
  static constexpr std::size_t release_above = std::size_t{1} << 20;

  int fd_;
  const std::size_t max_line_;
  Fd cancel_;  ///< an eventfd: cancel() makes it readable
  std::vector<char> buffer_;
  std::size_t pos_ = 0;       ///< where the next line starts in buffer_
  std::size_t searched_ = 0;  ///< buffer_ holds no '\n' from pos_ up to here
  std::size_t line_ = 0;
  bool end_ = false;
  bool skipping_ = false;     ///< dropping the rest of a line that was too long
  int error_ = 0;
};

/// Bytes of arguments at which a chunk closes, whatever its number of lines (--chunk-bytes).
constexpr std::size_t default_chunk_bytes = std::size_t{4} << 20;

/// A line read ahead, before the reading thread starts.
struct AheadLine {
  std::size_t number;
  std::string text;
  bool too_long = false;  ///< longer than --max-line-bytes: `text` is empty
};

/// Why a line was not read: it is longer than `max_line` bytes.
std::string too_long_error(std::size_t max_line) {
  return "longer than " + detail::format_size(max_line) + " (--max-line-bytes)";
}

/// A chunk of input lines: their numbers, and the argument lines of those that could be read.
struct LineChunk {
  struct Line {
    std::size_t number;
    std::string error;  ///< not empty: the line could not be read (an error line, --keep-going)
  };
  std::vector<Line> lines;
  std::string text;       ///< the argument objects of the readable lines, one per line
  std::uint32_t items = 0;
  std::string kept;       ///< a copy of `text` for a rerun (--keep-going only)
  std::size_t bytes = 0;  ///< what it holds until written out (ChunkReader's budget)

  std::size_t first() const { return lines.front().number; }
  std::size_t last() const { return lines.back().number; }
};

/**
Reads the input in a thread of its own and cuts it into chunks of lines, so that the map's engine
(ferry's MapRun, behind Executor::imap) never blocks on the input: a chunk is ready when it is
full (`chunksize` lines, or `chunk_bytes` of arguments), or early when the input stalls (a slow
producer still streams). At most `capacity` chunks wait to be taken; the engine bounds those sent.
Memory is bounded in bytes too: no chunk is read while the chunks read and not yet released
(written out) hold `budget` bytes, unless at most `min_held` are (one per worker, so that lines
longer than the budget allows still keep every worker busy).
*/
class ChunkReader {
 public:
  struct Setup {
    std::size_t chunksize;
    std::size_t capacity;
    std::optional<std::size_t> arity;
    std::string task;
    bool keep_going;
    std::size_t max_line;
    std::size_t chunk_bytes;
    std::size_t budget;
    std::size_t min_held;
  };

  ChunkReader(Input& input, std::deque<AheadLine> ahead, Setup setup)
      : input_(input), ahead_(std::move(ahead)), setup_(std::move(setup)) {}
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;
  ~ChunkReader() { stop(); }

  /// Starts reading; `wake` is called (from the reading thread) when a chunk is ready or the
  /// input ended.
  void start(std::function<void()> wake) {
    wake_ = std::move(wake);
    thread_ = std::thread([this] { run(); });
  }

  /// Stops reading (a blocked read too) and waits for the thread.
  void stop() {
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
    }
    space_.notify_all();
    input_.cancel();
    if (thread_.joinable()) thread_.join();
  }

  /// The next chunk if one is ready; later when the input has not given one yet.
  detail::Produced take(LineChunk& out) {
    std::lock_guard lock(mu_);
    if (ready_.empty()) return ended_ ? detail::Produced::end : detail::Produced::later;
    out = std::move(ready_.front());
    ready_.pop_front();
    space_.notify_one();
    return detail::Produced::chunk;
  }

  /// A chunk taken was written out: its bytes no longer count against the budget.
  void release(const LineChunk& c) {
    {
      std::lock_guard lock(mu_);
      held_bytes_ -= c.bytes;
      --held_;
    }
    space_.notify_one();
  }

  /// Once the reading ended: the first line that could not be read, without --keep-going.
  const std::optional<std::string>& input_error() const { return input_error_; }

 private:
  void run() {
    try {
      bool ended = false;
      while (!ended) {
        {
          // Room is made before a chunk is read, so that the one being read counts too.
          std::unique_lock lock(mu_);
          space_.wait(lock, [&] {
            return cancelled_ || (ready_.size() < setup_.capacity &&
                                  (held_bytes_ < setup_.budget || held_ <= setup_.min_held));
          });
          if (cancelled_) break;
        }
        LineChunk c;
        ended = !read_chunk(c);
        if (c.lines.empty()) continue;
        c.bytes = c.text.size() * (setup_.keep_going ? 2 : 1);  // and its copy, `kept`
        for (const auto& line : c.lines) c.bytes += line.error.size();
        {
          std::lock_guard lock(mu_);
          if (cancelled_) break;
          held_bytes_ += c.bytes;
          ++held_;
          ready_.push_back(std::move(c));
        }
        wake_();
      }
    } catch (const std::exception& e) {
      // Out of memory, most likely (a line of no end, from a pipe or a sparse file): the run
      // ends with this as its input's error, not with std::terminate in this thread.
      std::lock_guard lock(mu_);
      if (!input_error_) input_error_ = std::string("reading the input failed: ") + e.what();
    }
    {
      std::lock_guard lock(mu_);
      ended_ = true;
    }
    wake_();
  }

  Input::Got next_line(std::string& line, std::size_t& number, bool wait) {
    if (!ahead_.empty()) {
      AheadLine& a = ahead_.front();
      number = a.number;
      line = std::move(a.text);
      const bool too_long = a.too_long;
      ahead_.pop_front();
      return too_long ? Input::Got::too_long : Input::Got::line;
    }
    return input_.next(line, number, wait);
  }

  /// Reads up to a chunk of lines into `c`: blocks for the first line only; after that, a stall
  /// of the input ends the chunk early. False at the end of the input (or at an unreadable line
  /// without --keep-going).
  bool read_chunk(LineChunk& c) {
    std::string line;
    std::size_t number = 0;
    while (c.lines.size() < setup_.chunksize && c.text.size() < setup_.chunk_bytes) {
      Input::Got got = next_line(line, number, /*wait=*/c.lines.empty());
      if (got == Input::Got::would_block) return true;
      if (got == Input::Got::end) return false;
      std::string error;
      if (got == Input::Got::too_long) error = too_long_error(setup_.max_line);
      if (got == Input::Got::line &&
          json::append_line_arguments(c.text, line, setup_.arity, setup_.task, error)) {
        c.lines.push_back({number, {}});
        ++c.items;
      } else if (setup_.keep_going) {
        c.lines.push_back({number, json::error_line("BadInput", "line " + std::to_string(number) + ": " + error,
                                                    "read_input")});
      } else {
        input_error_ = "line " + std::to_string(number) + ": " + error;
        return false;
      }
    }
    return true;
  }

  Input& input_;
  std::deque<AheadLine> ahead_;
  const Setup setup_;
  std::function<void()> wake_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable space_;
  std::deque<LineChunk> ready_;
  std::size_t held_ = 0;        ///< chunks read and not released: ready_, and those taken
  std::size_t held_bytes_ = 0;  ///< their LineChunk::bytes
  bool ended_ = false;
  bool cancelled_ = false;
  // Written by the reading thread, read once it was joined (or ended_ was seen under mu_).
  std::optional<std::string> input_error_;
};

/// The lines of `s`, as spans of it (append_result reads them in place).
std::vector<std::span<char>> split_lines(std::string& s) {
  std::vector<std::span<char>> out;
  for (std::size_t at = 0; at < s.size();) {
    const std::size_t nl = std::min(s.find('\n', at), s.size());
    out.emplace_back(s.data() + at, nl - at);
    at = nl + 1;
  }
  return out;
}

/// A worker's result line as the output line, appended to `out`: the result value, null for void,
/// or the error object as is (then sets `failed`). Read as it is written, without a document of
/// it (json::append_result): a result about as large as its line costs about its size.
void append_output_line(std::string& out, std::span<char> result, bool& failed) {
  json::Outcome outcome{};
  std::string error;
  // A hostile line may be megabytes long: its start only is quoted, as it was before it was read
  // (in place).
  const std::string head = std::string(result.data(), std::min<std::size_t>(result.size(), 80)) +
                           (result.size() > 80 ? "..." : "");
  if (!json::append_result(out, result, outcome, error))
    throw std::runtime_error("the worker's result line is not a JSON object (" + error + "): " + head);
  if (outcome == json::Outcome::error) failed = true;
}

std::string lines_text(std::size_t first, std::size_t last) {
  return first == last ? "line " + std::to_string(first)
                       : "lines " + std::to_string(first) + "-" + std::to_string(last);
}

std::string lines_text(const LineChunk& c) { return lines_text(c.first(), c.last()); }

/// Sends `text`, the argument lines of the inputs from line `first` on (`items` of them, each
/// line's number one past the one before) or, when `first` is 0, of lines not all consecutive
/// (a chunk that left out an unreadable line, --keep-going). Consecutive ones go with their first
/// input's index (line number - 1), as a chunk of Executor::map goes: the trace's slice shows
/// where the chunk starts (`first_input`), and the error names its line (describe_lines).
Future<std::string> send_lines(Executor& executor, const TaskRef& ref, std::string text, std::uint32_t items,
                               bool keep_going, std::size_t first) {
  if (first == 0) return executor.submit_json(ref, std::move(text), items, keep_going);
  return detail::submit_json_chunk(executor, ref, std::move(text), items, keep_going, first - 1);
}

/// A timeout as MapRun's TimeoutError states it.
std::chrono::nanoseconds whole_timeout(std::chrono::duration<double> timeout) {
  return std::chrono::round<std::chrono::nanoseconds>(timeout);
}

/// The map's TimeoutError, which names the time its engine was given (`given`: what was left of
/// --timeout once the input was read ahead), said of the whole --timeout instead; its counts stay.
/// Any other TimeoutError as it is.
TimeoutError said_of_whole(const TimeoutError& e, std::optional<std::chrono::nanoseconds> given,
                           std::chrono::nanoseconds whole) {
  const std::string said = "within its timeout of ";
  std::string what = e.what();
  const std::string from = given ? said + detail::format_duration(*given) : std::string();
  const auto at = given && !e.input_index() ? what.find(from) : std::string::npos;
  if (at == std::string::npos) return e;
  what.replace(at, from.size(), said + detail::format_duration(whole));
  return TimeoutError(what);
}

/// describe() of what lines sent by send_lines threw. An error that names its input (" (input N)"
/// or " (inputs N to M)" at the end of its message, counted from 0 as Executor::map's) is said
/// by the line it names: `where` becomes "line N+1" ("lines N+1-M+1"), and the message loses
/// that end (the error line of an output line needs no other number than its own).
Failure describe_lines(const std::exception_ptr& error, std::string& where) {
  Failure f = describe(error);
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    if (const auto index = e.input_index()) {
      const std::string_view full = e.what(), plain = e.std::runtime_error::what();
      const std::string_view suffix = full.substr(std::min(plain.size(), full.size()));
      if (std::string_view(f.message).ends_with(suffix) &&
          f.message.size() - suffix.size() >= f.own_at + f.own_size)
        f.message.resize(f.message.size() - suffix.size());
      where = lines_text(*index + 1, *index + e.input_count());
    }
  } catch (...) {
  }
  return f;
}

}  // namespace

int run_map(const MapOptions& options, const GlobalOptions& global) {
  // --timeout bounds the whole run, counted from here: the read-ahead of a pipe below waits until
  // then at most, and the map's engine is given what is left. (The engine's own count started
  // after the read-ahead, which waited without a limit for a pipe's first line: a pipe silent
  // for an hour ran an hour, and exit status 0 if it then ended.)
  const std::chrono::duration<double> timeout(options.timeout);
  const detail::Clock::time_point deadline =
      options.timeout > 0 ? detail::deadline_after(timeout) : detail::Clock::time_point::max();
  if (auto refused = input_is_output(options.file)) {  // `ferry map TASK in.jsonl >> in.jsonl`
    print_error("map", *refused);
    return exit_usage;
  }
  TaskInfo info;
  Call initializer;
  try {
    info = find_task(global, options.task);
    std::optional<Call> call = initializer_call("map", global, options.containment);
    if (!call) return exit_usage;
    initializer = std::move(*call);
  } catch (...) {
    return report("map", describe(std::current_exception()));
  }

  const bool from_file = !options.file.empty() && options.file != "-";
  Fd file;
  if (from_file) {
    // Without waiting: a named pipe's open() waits for a writer, without a limit (--timeout did
    // not bound it). Input's reads wait for it instead, as for a pipe's first line: each read is
    // polled first, and a FIFO's poll waits until a writer has written or come and gone.
    file.fd = ::open(options.file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (file.fd < 0) {
      print_error("map", "cannot open " + options.file + ": " + std::strerror(errno));
      return exit_usage;
    }
    if (const int flags = ::fcntl(file.fd, F_GETFL); flags < 0 || ::fcntl(file.fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
      print_error("map", "cannot read " + options.file + ": " + std::strerror(errno));
      return exit_usage;
    }
  }
  // FILE may name it too (/dev/stdin, /proc/self/fd/0): then it is the /dev/null put in its place.
  struct stat opened {}, in {};
  const bool names_stdin = from_file && closed_stdio().in && ::fstat(file.fd, &opened) == 0 &&
                           ::fstat(STDIN_FILENO, &in) == 0 && opened.st_dev == in.st_dev && opened.st_ino == in.st_ino;
  if ((!from_file || names_stdin) && closed_stdio().in) {
    print_error("map", "cannot read the input: standard input is closed (give FILE, or redirect it)");
    return exit_usage;
  }
  Stdio io = isolate_stdio(/*take_stdin=*/!from_file);
  const std::optional<std::size_t> arity = signature_arity(info.signature);
  const std::size_t workers =
      options.workers ? options.workers : global.workers ? global.workers : cpu_count();
  // A line is refused past the size of the largest message ferry takes, unless told otherwise.
  const std::size_t max_line = options.max_line_bytes
                                   ? options.max_line_bytes
                                   : static_cast<std::size_t>(detail::Config::read().max_frame_bytes);

  // Memory is bounded in bytes, not only in lines: a chunk closes at chunk_bytes of arguments,
  // and what was read and not yet written out (chunks waiting, in flight, or done behind one that
  // is not; a pipe's read-ahead) stays within `budget`, about as many chunks as may be in flight,
  // or one chunk per worker and one more when lines are longer than that allows.
  const std::size_t max_in_flight = 2 * workers + 2;
  const std::size_t chunk_bytes = options.chunk_bytes ? options.chunk_bytes : default_chunk_bytes;
  const std::size_t budget = chunk_bytes > std::numeric_limits<std::size_t>::max() / max_in_flight
                                 ? std::numeric_limits<std::size_t>::max()
                                 : chunk_bytes * max_in_flight;

  // The total, for the progress bar and the default chunk size. A regular file (FILE, or stdin
  // redirected from one) is counted first; not a pipe, which the count would consume. Of a pipe,
  // without --chunksize, what is there is read ahead, up to every worker's four chunks of 1024
  // lines and the budget's bytes: if the input ends within that, its size is known.
  std::optional<Input> input;
  std::optional<std::size_t> total;
  std::deque<AheadLine> ahead;
  try {
    input.emplace(from_file ? file.fd : io.in, max_line);
    struct stat st {};
    if (::fstat(input->fd(), &st) == 0 && S_ISREG(st.st_mode)) {
      total = input->count_and_rewind();
    } else if (options.chunksize == 0) {
      std::string line;
      std::size_t number = 0;
      Input::Got got = Input::Got::line;
      std::size_t bytes = 0;
      while (ahead.size() < 4 * workers * 1024 && bytes < budget) {
        got = input->next(line, number, /*wait=*/ahead.empty(), deadline);
        if (got == Input::Got::would_block && ahead.empty()) {
          // No line came before the deadline: nothing was started, and nothing is done.
          return report("map", describe(std::make_exception_ptr(
                                   TimeoutError::map_timeout(whole_timeout(timeout), 0, 0, 0, 0, 0, true))));
        }
        if (got != Input::Got::line && got != Input::Got::too_long) break;
        bytes += line.size();
        ahead.push_back({number, std::move(line), got == Input::Got::too_long});
        // The rest of that line is the reading thread's to drop (under --keep-going): it may
        // have no end (/dev/zero), and this thread cannot be cancelled.
        if (got == Input::Got::too_long) break;
      }
      if (got == Input::Got::end) total = ahead.size();
    }
  } catch (const std::exception& e) {
    // As in the reading thread: out of memory, most likely. A usage error, not an internal one.
    print_error("map", std::string("reading the input failed: ") + e.what());
    return exit_usage;
  }
  std::size_t chunksize = options.chunksize;
  if (chunksize == 0) {
    chunksize = total ? std::clamp<std::size_t>((*total + 4 * workers - 1) / (4 * workers), 1, 1024)
                      : 1024;
  }

  // No more workers than chunks, when the number of lines is known: `-j 8` (or cpu_count()
  // without -j) of two lines started 8 workers, each loading the plugin, for two calls.
  const std::size_t pool_size =
      total ? std::clamp<std::size_t>((*total + chunksize - 1) / chunksize, 1, workers) : workers;

  std::optional<std::chrono::nanoseconds> given;  // the engine's timeout, when it is not --timeout
  try {
    Executor executor(executor_options(global, pool_size, options.containment, std::move(initializer)));
    const TaskRef ref{.library = info.library, .name = info.name};
    ChunkReader reader(*input, std::move(ahead),
                       {.chunksize = chunksize, .capacity = max_in_flight, .arity = arity,
                        .task = info.name, .keep_going = options.keep_going, .max_line = max_line,
                        .chunk_bytes = chunk_bytes, .budget = budget, .min_held = workers});

    // The chunks handed to the engine and not yet written out, in input order; each MapChunk's
    // `first` is its sequence number (`base` is the front's).
    std::deque<LineChunk> flight;
    std::size_t base = 0;
    ferry::MapOptions map_options;
    map_options.progress = !options.no_progress;
    map_options.timeout = timeout;
    if (deadline != detail::Clock::time_point::max()) {
      // What the read-ahead and the start of the pool left of it; none left: the least there is
      // (a timeout of 0 is none), so that the engine ends with its TimeoutError at once.
      map_options.timeout = std::max<std::chrono::duration<double>>(deadline - detail::Clock::now(),
                                                                    std::chrono::nanoseconds(1));
      given = whole_timeout(map_options.timeout);
    }
    map_options.kill_running = true;  // a timeout ends the lines running too
    detail::MapRun<std::string> run(
        map_options, max_in_flight, /*ordered=*/true, total.value_or(0),
        [&](detail::MapChunk<std::string>& c) {
          LineChunk lines;
          detail::Produced got = reader.take(lines);
          if (got != detail::Produced::chunk) return got;
          c.first = base + flight.size();
          c.count = lines.items;
          flight.push_back(std::move(lines));
          return got;
        },
        [&](detail::MapChunk<std::string>& c) {
          LineChunk& lines = flight[c.first - base];
          if (lines.items == 0) {  // every line of it was unreadable (--keep-going)
            auto none = std::make_shared<detail::State<std::string>>(detail::LocalState{});
            none->set_value(std::string());
            c.future = Future<std::string>(std::move(none));
            return;
          }
          if (options.keep_going) lines.kept = lines.text;
          const bool consecutive = lines.items == lines.lines.size();
          c.future = send_lines(executor, ref, std::move(lines.text), lines.items, options.keep_going,
                                consecutive ? lines.first() : 0);
        },
        "lines");
    run.set_wakeable();
    // The reading thread ends before the engine it wakes is gone.
    struct StopReader {
      ChunkReader& reader;
      ~StopReader() { reader.stop(); }
    } stop_reader{reader};
    reader.start([&run] { run.wake(); });

    ferry::detail::ProgressBar& progress = run.progress_bar();
    // Results and the bar on the same terminal: the bar steps aside while results are written.
    const bool shared_terminal = progress.enabled() && ::isatty(io.out_fd) == 1;
    bool any_failed = false;
    auto stop = [&](const std::string& where, const Failure& failure) {
      progress.clear();
      report("map", failure, where);
      executor.shutdown({.wait = false, .kill_workers = true});
      return failure.code;
    };

    progress.update(0, true);
    while (auto chunk = run.next()) {
      LineChunk& c = flight.front();
      // One per readable line of the chunk: in the chunk's result text, or (lines run again, or
      // given an error) in `owned`, whose strings stay where they are as it grows.
      std::vector<std::span<char>> results;
      std::string text;
      std::deque<std::string> owned;
      if (c.items) {
        try {
          text = chunk->future.get();
          results = split_lines(text);
          if (results.size() != c.items)
            throw std::runtime_error("the worker returned " + std::to_string(results.size()) +
                                     " result lines for " + std::to_string(c.items));
        } catch (...) {
          std::string where = lines_text(c);
          Failure failure = describe_lines(std::current_exception(), where);
          bool fatal = failure.code == exit_lookup || failure.code == exit_pool;
          // A pool that cannot run (its initializer failed, no worker starts) is no line's doing.
          if (!options.keep_going || fatal) return stop(failure.code == exit_pool ? std::string() : where, failure);
          // The keep-going policy of map_outcomes. A failing line is an error object already
          // (the worker keeps going), so what fails here is the chunk: its worker died, and its
          // lines run again one by one so that only the line at fault gets an error; or the
          // chunk as a whole, and each of its lines gets that error.
          results.clear();
          auto failed = detail::classify_chunk_failure(std::current_exception(), 0, c.items);
          if (failed.kind != detail::ChunkFailure::worker || c.items == 1) {
            results.assign(c.items, owned.emplace_back(json::error_line("ferry::" + failure.type, failure.message, "task")));
            c.kept.clear();
          }
          // Each with its own line's number: the readable lines of the chunk, in order.
          std::vector<Future<std::string>> singles;
          std::vector<std::size_t> numbers;
          for (const auto& line : c.lines)
            if (line.error.empty()) numbers.push_back(line.number);
          for (auto l : split_lines(c.kept)) {
            const std::size_t number = singles.size() < numbers.size() ? numbers[singles.size()] : 0;
            singles.push_back(send_lines(executor, ref, std::string(l.data(), l.size()), 1, true, number));
          }
          for (auto& f : singles) {
            try {
              std::string r = f.get();
              while (!r.empty() && r.back() == '\n') r.pop_back();
              results.push_back(owned.emplace_back(std::move(r)));
            } catch (...) {
              std::string one_where = lines_text(c);
              Failure one = describe_lines(std::current_exception(), one_where);
              if (one.code == exit_lookup || one.code == exit_pool)
                return stop(one.code == exit_pool ? std::string() : one_where, one);
              results.push_back(owned.emplace_back(json::error_line("ferry::" + one.type, one.message, "task")));
            }
          }
        }
      }

      std::string out;
      std::size_t next = 0;
      for (const auto& line : c.lines) {
        if (!line.error.empty()) {
          out += line.error;
          any_failed = true;
        } else {
          bool failed = false;
          try {
            append_output_line(out, results[next++], failed);
          } catch (...) {
            return stop("line " + std::to_string(line.number), describe(std::current_exception()));
          }
          if (failed) any_failed = true;
        }
        out += '\n';
      }
      if (shared_terminal) progress.clear();
      std::fwrite(out.data(), 1, out.size(), io.out);
      if (std::fflush(io.out) != 0 || std::ferror(io.out)) {
        // A full disk, a closed stdout: what runs after this cannot be written either (it ran to
        // the end of the input before saying so).
        progress.clear();
        const int status = finish_output("map", io.out, exit_ok);
        executor.shutdown({.wait = false, .kill_workers = true});
        return status;
      }
      run.advance(c.lines.size());
      reader.release(c);
      flight.pop_front();
      ++base;
    }

    if (int status = finish_output("map", io.out, exit_ok); status != exit_ok) return status;
    if (input->error()) {
      print_error("map", "cannot read the input: " + std::string(std::strerror(input->error())));
      return exit_usage;
    }
    if (reader.input_error()) {
      print_error("map", *reader.input_error());
      return exit_usage;
    }
    return any_failed ? exit_task_failed : exit_ok;
  } catch (const TimeoutError& e) {
    return report("map", describe(std::make_exception_ptr(said_of_whole(e, given, whole_timeout(timeout)))));
  } catch (...) {
    return report("map", describe(std::current_exception()));
  }
}

}  // namespace ferry::cli
