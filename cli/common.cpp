// SPDX-License-Identifier: BSD-3-Clause
// What every subcommand shares: exit codes, the plugin path, executor options, error reports.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>

#include "commands.hpp"
#include "json.hpp"

namespace ferry::cli {

std::string exit_codes_help(std::string_view which, std::string_view one) {
  static constexpr const char* lines[] = {
      "  0  success\n",
      "  1  a task failed, also past a limit or its sandbox (with map --keep-going: some line\n"
      "     failed), or the output could not be written\n",
      "  2  usage error: bad options or arguments, bad JSON, arguments that do not fit the task\n",
      "  3  plugin or task lookup error (PluginError): no such task, ambiguous name, unsafe plugin\n",
      "  4  the pool could not run (BrokenProcessPool): ferry-worker missing or not startable, or\n"
      "     the --initializer failed\n"};
  std::string out = "Exit status:\n";
  for (char c : which) {
    if (c == '1' && !one.empty()) {
      out += "  1  " + std::string(one) + "\n";
    } else if (c >= '0' && c <= '4') {
      out += lines[c - '0'];
    }
  }
  return out;
}

std::string global_options_help() {
  return wrap("Global options, before or after the subcommand (see ferry --help): --plugin-dir DIR "
              "(repeatable), -j/--workers N, --worker PATH.",
              100) +
         "\n";
}

std::string wrap(std::string_view text, std::size_t width) {
  std::string out;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    // Keep a line's leading indentation on its continuation lines.
    std::size_t indent = std::min(line.find_first_not_of(' '), line.size());
    std::size_t column = 0;
    bool first = true;
    while (!line.empty()) {
      std::size_t start = first ? 0 : line.find_first_not_of(' ');
      if (start == std::string_view::npos) break;
      line.remove_prefix(start);
      auto space = line.find(' ', first ? indent : 0);
      std::string_view word = line.substr(0, space);
      if (!first && column + 1 + word.size() > width) {
        out += "\n" + std::string(indent, ' ');
        column = indent;
      } else if (!first) {
        out += ' ';
        ++column;
      }
      out += word;
      column += word.size();
      line.remove_prefix(space == std::string_view::npos ? line.size() : space);
      first = false;
    }
    if (nl != std::string_view::npos) out += '\n';
  }
  return out;
}

std::vector<std::filesystem::path> plugin_path(const GlobalOptions& global) {
  std::vector<std::filesystem::path> dirs(global.plugin_dirs.begin(), global.plugin_dirs.end());
  return PluginIndex::search_path(std::move(dirs));
}

std::filesystem::path worker_path(const GlobalOptions& global) {
  return global.worker.empty() ? default_worker_path() : std::filesystem::path(global.worker);
}

ExecutorOptions executor_options(const GlobalOptions& global, std::size_t workers,
                                 const ContainmentOptions& containment, Call initializer) {
  ExecutorOptions o;
  o.max_workers = workers;
  o.plugin_dirs.assign(global.plugin_dirs.begin(), global.plugin_dirs.end());
  o.worker_path = global.worker;
  o.limits = containment.limits;
  o.sandbox = containment.sandbox;
  o.trace = containment.trace;
  o.initializer = std::move(initializer);
  o.initializer_timeout = Duration(containment.initializer_timeout);
  return o;
}

namespace {

/// The leading digits of `text` as a number, and the rest of it as `unit`; nullopt with `error`
/// when it does not start with a digit or does not fit.
std::optional<unsigned long long> split_number(std::string_view text, std::string_view& unit,
                                               std::string_view what, std::string& error) {
  const char* end = text.data() + text.size();
  unsigned long long n = 0;
  auto [stop, ec] = std::from_chars(text.data(), end, n);
  if (stop == text.data()) {
    error = "'" + std::string(text) + "' is not " + std::string(what);
    return std::nullopt;
  }
  if (ec == std::errc::result_out_of_range) {
    error = "'" + std::string(text) + "' is too large";
    return std::nullopt;
  }
  unit = std::string_view(stop, static_cast<std::size_t>(end - stop));
  return n;
}

/// False, with `error`, for 0: a limit of 0 is no limit, which the option's absence says.
bool not_zero(unsigned long long n, std::string_view text, std::string& error) {
  if (n == 0) error = "'" + std::string(text) + "' is zero (for no limit, leave the option out)";
  return n != 0;
}

bool same_letters(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

/// A validator that parses its value with `parse` and leaves the number in its place, for CLI11
/// to store; the error of `parse` is the usage error, after the option's name.
template <typename Parse>
CLI::Validator number_transform(Parse parse) {
  return CLI::Validator(
      [parse](std::string& value) {
        std::string error;
        auto n = parse(value, error);
        if (!n) return error;
        value = std::to_string(*n);
        return std::string();
      },
      "");
}

}  // namespace

std::optional<std::size_t> parse_size(std::string_view text, std::string& error) {
  static constexpr std::string_view what =
      "a size: a whole number of bytes, or one with a K, M, G or T suffix (powers of 1024; KiB, "
      "MiB, GiB, TiB too), e.g. 512M";
  std::string_view unit;
  auto n = split_number(text, unit, what, error);
  if (!n) return std::nullopt;
  unsigned shift = 0;
  if (!unit.empty()) {
    static constexpr std::pair<char, unsigned> units[] = {{'K', 10}, {'M', 20}, {'G', 30}, {'T', 40}};
    const char letter = static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])));
    auto u = std::find_if(std::begin(units), std::end(units),
                          [&](const auto& e) { return e.first == letter; });
    const std::string_view rest = unit.substr(1);
    if (u == std::end(units) || !(rest.empty() || same_letters(rest, "iB"))) {
      error = "'" + std::string(text) + "' is not " + std::string(what);
      return std::nullopt;
    }
    shift = u->second;
  }
  if (!not_zero(*n, text, error)) return std::nullopt;
  if (*n > (std::numeric_limits<std::size_t>::max() >> shift)) {
    error = "'" + std::string(text) + "' is too large";
    return std::nullopt;
  }
  return static_cast<std::size_t>(*n << shift);
}

CLI::Validator size_transform() { return number_transform(parse_size); }

CLI::Validator whole_number_in(std::size_t lo, std::size_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& value) {
        const std::string range = std::to_string(lo) + " to " + std::to_string(hi);
        std::size_t n = 0;
        const char* end = value.data() + value.size();
        auto [stop, ec] = std::from_chars(value.data(), end, n);
        if (stop == value.data() || stop != end)
          return "'" + value + "' is not a whole number (" + range + ")";
        if (ec == std::errc::result_out_of_range || n < lo || n > hi)
          return "'" + value + "' is not in the range " + range;
        return std::string();
      },
      "[" + std::to_string(lo) + " - " + std::to_string(hi) + "]");
}

std::optional<double> parse_seconds(std::string_view text, std::string& error) {
  // Read as CLI11 then stores it (strtold), so that what is checked is what is kept.
  const std::string copy(text);
  char* end = nullptr;
  const long double n = copy.empty() ? 0 : std::strtold(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || std::isnan(n)) {
    error = "'" + copy + "' is not a number of seconds";
    return std::nullopt;
  }
  // Checked as kept: 1e-400 is a long double above 0 but the double 0, which means no limit.
  if (!(n > 0) || !(static_cast<double>(n) > 0)) {
    error = "'" + copy + "' is not more than 0 seconds (for no limit, leave the option out)";
    return std::nullopt;
  }
  // Past what a double holds (1e400, inf): infinity, which the library takes as no limit, as it
  // takes one too long for its clock.
  return static_cast<double>(n);
}

CLI::Validator seconds_check() {
  return CLI::Validator(
      [](std::string& value) {
        std::string error;
        return parse_seconds(value, error) ? std::string() : error;
      },
      "");
}

std::optional<long long> parse_duration(std::string_view text, std::string& error) {
  static constexpr std::string_view what =
      "a duration: whole seconds, or a whole number with an s, m or h suffix, e.g. 90s, 2m";
  std::string_view unit;
  auto n = split_number(text, unit, what, error);
  if (!n) return std::nullopt;
  unsigned long long scale = 1;
  if (unit == "m") {
    scale = 60;
  } else if (unit == "h") {
    scale = 3600;
  } else if (!unit.empty() && unit != "s") {
    error = "'" + std::string(text) + "' is not " + std::string(what);
    return std::nullopt;
  }
  if (!not_zero(*n, text, error)) return std::nullopt;
  if (*n > static_cast<unsigned long long>(std::numeric_limits<long long>::max()) / scale) {
    error = "'" + std::string(text) + "' is too large";
    return std::nullopt;
  }
  return static_cast<long long>(*n * scale);
}

void add_containment_options(CLI::App& sub, ContainmentOptions& options) {
  Limits& limits = options.limits;
  Sandbox& sandbox = options.sandbox;
  // A path is checked and made absolute here: the worker would refuse to start on a missing one,
  // and the sandbox must not depend on the worker's directory.
  const CLI::Validator existing_path(
      [](std::string& value) {
        std::error_code ec;
        if (!std::filesystem::exists(value, ec))
          return "no such file or directory: " + value;
        std::filesystem::path path = std::filesystem::absolute(value, ec).lexically_normal();
        if (ec) return ec.message() + ": " + value;
        if (!path.has_filename() && path.has_relative_path()) path = path.parent_path();  // "dir/"
        value = path.string();
        return std::string();
      },
      "");
  const auto size = size_transform();
  const auto positive = number_transform([](std::string_view text, std::string& error) {
    std::string_view unit;
    auto n = split_number(text, unit, "a whole number", error);
    if (n && !unit.empty()) {
      error = "'" + std::string(text) + "' is not a whole number";
      return std::optional<unsigned long long>();
    }
    return n && not_zero(*n, text, error) ? n : std::nullopt;
  });

  CLI::Option* on = sub.add_flag(
      "--sandbox", sandbox.enabled,
      wrap("run the workers in a sandbox (seccomp, Landlock, namespaces): no network, no exec, "
           "files readable only where the task needs them and in --read, writable only in "
           "--write (default: a private temporary directory, $TMPDIR), and only a list of the "
           "shell's environment (README). A denied system call fails the task with "
           "SandboxViolationError"));
  CLI::Option* relax[] = {
      sub.add_flag("--allow-network", sandbox.network, "with --sandbox: allow sockets"),
      sub.add_flag("--allow-exec", sandbox.exec, "with --sandbox: allow execve"),
  sub.add_option_function<std::vector<std::string>>(
         "--read",
         [&sandbox](const std::vector<std::string>& dirs) {
           sandbox.read.assign(dirs.begin(), dirs.end());
         },
         "with --sandbox: a file or directory the task may read (repeatable)")
      ->type_name("DIR")
      ->allow_extra_args(false)
      ->transform(existing_path),
  sub.add_option_function<std::vector<std::string>>(
         "--write",
         [&sandbox](const std::vector<std::string>& dirs) {
           sandbox.write.assign(dirs.begin(), dirs.end());
         },
         wrap("with --sandbox: a file or directory the task may write (repeatable; replaces the "
              "private temporary directory)"))
      ->type_name("DIR")
      ->allow_extra_args(false)
      ->transform(existing_path),
      sub.add_flag("--best-effort", sandbox.best_effort,
                   wrap("with --sandbox: use what this kernel offers (see ferry info) instead of "
                        "refusing to start when a mechanism is missing"))};
  // Checked here rather than with CLI11's needs(), whose "Needs: --sandbox" crowds the help.
  sub.parse_complete_callback([on, relax] {
    if (on->count() > 0) return;
    for (const CLI::Option* o : relax)
      if (o->count() > 0)
        throw CLI::ValidationError(o->get_name() + " needs --sandbox: it relaxes a sandbox, and "
                                                   "without --sandbox there is none");
  });
  sub.add_option("--memory", limits.memory,
                 wrap("private memory of a worker while a task runs (with --sandbox, where a "
                      "memory cgroup can be made, all its memory, shared too): 512M, 2G, 1024K, "
                      "4GiB or bytes (K, M, G, T: powers of 1024)"))
      ->type_name("SIZE")
      ->transform(size);
  sub.add_option_function<long long>(
         "--cpu", [&limits](const long long& s) { limits.cpu_time = std::chrono::seconds(s); },
         "CPU time of one task: 10s, 2m, 1h or seconds (whole, at least 1)")
      ->type_name("DURATION")
      ->transform(number_transform(parse_duration));
  sub.add_option("--open-files", limits.open_files, "descriptors a worker may hold")
      ->type_name("N")
      ->transform(positive);
  sub.add_option("--processes", limits.processes, "processes a task may have at once")
      ->type_name("N")
      ->transform(positive);
  sub.add_option("--file-size", limits.file_size, "largest file a task may write (SIZE as --memory)")
      ->type_name("SIZE")
      ->transform(size);
}

void add_trace_option(CLI::App& sub, ContainmentOptions& options) {
  sub.add_option("--trace", options.trace,
                 wrap("write a trace of the run to FILE (Chrome Trace Event JSON): open it in "
                      "Perfetto (ui.perfetto.dev, Open trace file) or chrome://tracing. One track "
                      "per worker, a slice per task call, queue waits, worker starts, exits and "
                      "crashes. A symbolic link at FILE is refused. Default: $FERRY_TRACE"))
      ->type_name("FILE");
}

void add_initializer_options(CLI::App& sub, ContainmentOptions& options) {
  sub.add_option("--initializer", options.initializer,
                 wrap("a task run once in every worker before any other (concurrent.futures' "
                      "initializer=): it sets up what the tasks of its plugin then use, such as "
                      "a model loaded once per worker. If it fails, no task runs"))
      ->type_name("TASK");
  // Without --initializer, --initarg is refused by initializer_call() (the subcommand's one
  // parse_complete_callback belongs to the containment options).
  sub.add_option("--initarg", options.initargs,
                 wrap("with --initializer: one JSON value per argument of its TASK, in order, "
                      "as ARGs are given to ferry run (repeatable; initargs=)"))
      ->type_name("JSON")
      ->allow_extra_args(false);
  sub.add_option("--initializer-timeout", options.initializer_timeout,
                 wrap("with --initializer: seconds it may run in a worker; past that the worker "
                      "is killed and another started, and after 3 such workers in a row the "
                      "tasks fail with BrokenProcessPool. Default: no limit"))
      ->type_name("SECONDS")
      ->check(seconds_check());
}

std::optional<std::string> json_arguments(std::string_view command, std::string_view what,
                                          const std::vector<std::string>& args, std::size_t after_dashes) {
  // Each argument written again as it is read (json::append_value): no document of it is made.
  std::string line = "{";
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    std::string error;
    line += (i > 0 ? ",\"value" : "\"value") + std::to_string(i) + "\":";
    bool parsed = json::append_value(line, arg, error);
    // An argument travels one level down, inside {"value0": ...}: one nested as deep as the
    // worker reads was accepted here and refused there, its offset in the wrapped line.
    if (const auto scan = detail::scan_json_text(arg, detail::max_json_depth - 1, [](const auto&) {});
        parsed && scan.problem == detail::JsonTextScan::Problem::too_deep) {
      parsed = false;
      error = "nested deeper than " + std::to_string(detail::max_json_depth - 1) +
              " levels, the most an argument may be inside the task's arguments (at offset " +
              std::to_string(scan.offset) + ")";
    }
    if (!parsed) {
      // One that followed -- is an ARG: no option, and -- was given already.
      const bool maybe_option = what == "argument" && i + after_dashes < args.size();
      std::string hint = !arg.empty() && arg[0] == '-' && maybe_option
                             ? " (an unknown option? options go before TASK; put -- before ARGs "
                               "starting with '-')"
                             : !arg.empty() && std::isalpha(static_cast<unsigned char>(arg[0]))
                                   ? " (a JSON string needs its quotes: '\"text\"')"
                                   : "";
      // A hostile argument may be megabytes long: quote its start only.
      std::string shown = arg.size() > 80 ? arg.substr(0, 80) + "..." : arg;
      print_error(command, std::string(what) + " " + std::to_string(i + 1) + " is not valid JSON: " +
                               error + ": " + shown + hint);
      return std::nullopt;
    }
  }
  line += '}';
  return line;
}

std::optional<Call> initializer_call(std::string_view command, const GlobalOptions& global,
                                     const ContainmentOptions& options) {
  if (options.initializer.empty()) {
    if (!options.initargs.empty()) {
      print_error(command, "--initarg needs --initializer: it is an argument of the initializer");
      return std::nullopt;
    }
    if (options.initializer_timeout > 0) {
      print_error(command, "--initializer-timeout needs --initializer: it limits the initializer");
      return std::nullopt;
    }
    return Call();
  }
  auto line = json_arguments(command, "--initarg", options.initargs);
  if (!line) return std::nullopt;
  // Looked up here, as ferry run looks up its task: an unknown initializer fails before any
  // worker starts, and a wrong count of arguments is a usage error rather than a broken pool.
  TaskInfo info = find_task(global, options.initializer);
  if (auto arity = signature_arity(info.signature); arity && *arity != options.initargs.size()) {
    print_error(command, "initializer '" + info.name + "' takes " + std::to_string(*arity) +
                             (*arity == 1 ? " argument" : " arguments") + " (" + info.signature +
                             "), got " + std::to_string(options.initargs.size()) + " --initarg");
    return std::nullopt;
  }
  return Call::json(TaskRef{.library = info.library, .name = info.name}, std::move(*line));
}

std::string containment_options_help() {
  return wrap("Containment, for untrusted tasks (README \"Running untrusted code\"): --memory, "
              "--cpu, --open-files, --processes and --file-size limit every worker while a task "
              "runs, and a task past one fails with ResourceLimitError (its worker is replaced); "
              "--sandbox with --allow-network, --allow-exec, --read DIR, --write DIR and "
              "--best-effort confines the workers, and a denied system call fails the task with "
              "SandboxViolationError. Both exit with status 1. ferry info shows what this machine "
              "offers.",
              100) +
         "\n";
}

namespace {

ClosedStdio closed_at_start;

}  // namespace

const ClosedStdio& fill_closed_stdio() noexcept {
  bool* closed[] = {&closed_at_start.in, &closed_at_start.out, &closed_at_start.err};
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    *closed[fd] = true;
    // The lowest free descriptor: this one, as those below it are open now (no thread runs yet).
    // Opened the other way: on stdin a read, on stdout a write fails with EBADF, as it did on the
    // closed descriptor, so that a result is never lost in /dev/null with exit status 0. stderr's
    // takes what is written (a task's messages, and ours, have nowhere to go).
    const int opened = ::open("/dev/null", fd == STDOUT_FILENO ? O_RDONLY : O_WRONLY);
    if (opened >= 0 && opened != fd) {
      ::dup2(opened, fd);
      ::close(opened);
    }
  }
  return closed_at_start;
}

const ClosedStdio& closed_stdio() noexcept { return closed_at_start; }

namespace {

/// `fd` duplicated to a new close-on-exec descriptor above 2, or -1.
int move_fd(int fd) { return ::fcntl(fd, F_DUPFD_CLOEXEC, 3); }

/// The write of open_output()'s streams (fopencookie): all `size` bytes to the descriptor, else
/// the fewer it wrote, with errno set (glibc's manual: a short count, 0 for none, is an error,
/// never a negative value: its fwrite took -1 as a count, SIZE_MAX, and copied past the data).
/// stdio's own write gave up at EAGAIN, the results cut short, and its buffer is dropped once a
/// write failed: so no failure but a real one comes back to it.
ssize_t write_waiting(void* cookie, const char* data, std::size_t size) {
  const int fd = static_cast<int>(reinterpret_cast<std::intptr_t>(cookie));
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) {  // no device does this for a write of bytes; not a reason to spin
      errno = EIO;
      return static_cast<ssize_t>(done);
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return static_cast<ssize_t>(done);
    // A full pipe or terminal, non-blocking: room comes as the reader catches up. A reader gone
    // wakes this too (POLLERR), and the next write says EPIPE (or SIGPIPE ends ferry, as before).
    pollfd room{fd, POLLOUT, 0};
    while (::poll(&room, 1, -1) < 0)
      if (errno != EINTR) return static_cast<ssize_t>(done);
  }
  return static_cast<ssize_t>(size);
}

}  // namespace

std::FILE* open_output(int fd) {
  cookie_io_functions_t io{};
  io.write = write_waiting;  // no read, seek or close: the descriptor stays open
  return ::fopencookie(reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)), "w", io);
}

namespace {
/// output()'s stream: on descriptor 1 until isolate_stdio moves stdout, then on its new descriptor.
std::FILE* g_output = nullptr;
}  // namespace

std::FILE* output() {
  if (!g_output) {
    g_output = open_output(STDOUT_FILENO);
    if (!g_output) g_output = stdout;  // out of memory: stdio's own stream
  }
  return g_output;
}

Stdio isolate_stdio(bool take_stdin) {
  // Once per process: called again, descriptor 1 is stderr already, and moving it would make it
  // the results' stream.
  static std::optional<Stdio> done;
  if (done) return *done;
  Stdio s{output(), STDOUT_FILENO, take_stdin ? STDIN_FILENO : -1};
  std::fflush(stdout);
  std::fflush(s.out);
  if (int out = move_fd(STDOUT_FILENO); out >= 0) {
    // A closed stdout is /dev/null read-only (fill_closed_stdio): a write fails with EBADF, and
    // the results are lost as an error (finish_output).
    std::FILE* f = open_output(out);
    if (f && ::dup2(STDERR_FILENO, STDOUT_FILENO) >= 0) {
      s.out = f;
      s.out_fd = out;
      g_output = f;  // descriptor 1 is stderr now: output() must not name it
    } else {
      if (f) std::fclose(f);
      ::close(out);
    }
  }
  if (take_stdin) {
    if (int in = move_fd(STDIN_FILENO); in >= 0) {
      s.in = in;
      int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (null >= 0) {
        ::dup2(null, STDIN_FILENO);  // dup2 clears close-on-exec on fd 0: the workers get it
        ::close(null);
      }
    }
  }
  done = s;
  return s;
}

std::optional<std::string> input_is_output(const std::string& file) {
  // As cat refuses "input file is output file". Only a regular file: a terminal or a pipe may be
  // both ends (<> /dev/tty) without one reading what the other wrote.
  const bool from_stdin = file.empty() || file == "-";
  struct stat in {}, out {};
  if ((from_stdin ? ::fstat(STDIN_FILENO, &in) : ::stat(file.c_str(), &in)) != 0 ||
      ::fstat(STDOUT_FILENO, &out) != 0)
    return std::nullopt;
  if (!S_ISREG(in.st_mode) || in.st_dev != out.st_dev || in.st_ino != out.st_ino) return std::nullopt;
  return (from_stdin ? std::string("the input (stdin)") : "the input file " + file) +
         " is also the output (stdout): its results would be read back as input lines, without "
         "end; write them to another file";
}

TaskInfo find_task(const GlobalOptions& global, std::string_view name) {
  auto dirs = plugin_path(global);
  if (dirs.empty())  // the library's message would name ExecutorOptions: say it the CLI's way
    throw PluginError::task_not_found(std::string(name), "no plugin directories; give --plugin-dir "
                                                         "DIR or set FERRY_PLUGIN_PATH");
  PluginIndex index(std::move(dirs));
  return index.find(name);
}

namespace {

/// Where a task's message `own` ends `message` at `end`, as what() shows it (message_text):
/// Failure::own_at and own_size, the message there as the task sent it (report() shows it, as
/// it shows the rest, escaped once).
void mark_own_message(Failure& f, const std::string& own, std::size_t end) {
  const std::string shown = detail::message_text(own);
  if (end != std::string::npos && end >= shown.size() &&
      std::string_view(f.message).substr(end - shown.size(), shown.size()) == shown) {
    f.own_at = end - shown.size();
    f.message.replace(f.own_at, shown.size(), own);
    f.own_size = own.size();
  }
}

}  // namespace

Failure describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const TaskError& e) {
    Failure f{exit_task_failed, "TaskError", e.what(), error};
    // what() shows the task's type as message_text does: put back as sent, so that the line,
    // escaped as a whole when printed, shows a hostile type's escapes once, not twice.
    const std::string type = detail::message_text(e.remote_type());
    if (type != e.remote_type())
      if (const auto at = f.message.find(" raised " + type + " in worker "); at != std::string::npos)
        f.message.replace(at + 8, type.size(), e.remote_type());
    // what() ends with the task's message, then " (input N)" or " (inputs N to M)" in a map.
    mark_own_message(f, e.remote_message(), e.input_index() ? f.message.rfind(" (input") : f.message.size());
    return f;
  } catch (const ResourceLimitError& e) {  // before TerminatedWorkerError, its base
    return {exit_task_failed, "ResourceLimitError", e.what()};
  } catch (const SandboxViolationError& e) {  // likewise
    return {exit_task_failed, "SandboxViolationError", e.what()};
  } catch (const TerminatedWorkerError& e) {
    return {exit_task_failed, "TerminatedWorkerError", e.what(), error};
  } catch (const SerializationError& e) {
    // Arguments the worker cannot decode into the task's parameters are the caller's mistake.
    bool arguments = e.stage() == SerializationStage::decode_arguments ||
                     e.stage() == SerializationStage::encode_arguments;
    return {arguments ? exit_usage : exit_task_failed, "SerializationError", e.what()};
  } catch (const PluginError& e) {
    return {exit_lookup, "PluginError", e.what()};
  } catch (const UnresolvableTaskError& e) {
    return {exit_lookup, "UnresolvableTaskError", e.what()};
  } catch (const BrokenProcessPool& e) {
    Failure f{exit_pool, "BrokenProcessPool", e.what()};
    // libferry's advice names the library's option; here the command's is the one to give.
    static constexpr std::string_view library_advice = "Set ExecutorOptions::worker_path or FERRY_WORKER";
    if (auto at = f.message.find(library_advice); at != std::string::npos)
      f.message.replace(at, library_advice.size(), "Give --worker PATH or set FERRY_WORKER");
    // An initializer that threw: its TaskError is the cause (nested), whose message ends this
    // one, shown with its lines as a task's is, and whose stack is shown.
    if (const auto* nested = dynamic_cast<const std::nested_exception*>(&e); nested && nested->nested_ptr()) {
      try {
        std::rethrow_exception(nested->nested_ptr());
      } catch (const TaskError& cause) {
        f.stack_of = nested->nested_ptr();
        mark_own_message(f, cause.remote_message(), f.message.size());
      } catch (...) {
      }
    }
    return f;
  } catch (const CancelledError& e) {
    return {exit_task_failed, "CancelledError", e.what()};
  } catch (const TimeoutError& e) {
    return {exit_task_failed, "TimeoutError", e.what()};
  } catch (const Error& e) {
    return {exit_task_failed, "Error", e.what()};
  } catch (const std::invalid_argument& e) {
    // libferry's say "ferry: ..." (they stand alone in a host's output); here the command's own
    // prefix is there already: "ferry map: invalid argument: refusing to write the trace ...".
    std::string_view what = e.what();
    if (what.starts_with("ferry: ")) what.remove_prefix(7);
    return {exit_usage, "invalid argument", std::string(what)};
  } catch (const std::exception& e) {
    return {exit_task_failed, "error", e.what()};
  } catch (...) {
    return {exit_task_failed, "error", "unknown exception"};
  }
}


std::string terminal_line(std::string_view text) { return terminal_text(text, "\\x0a"); }

int finish_output(std::string_view command, std::FILE* out, int status) {
  // errno is fflush's when it fails, else (the error flag of an earlier write) still that write's.
  if (std::fflush(out) == 0 && !std::ferror(out)) return status;
  // A closed stdout (fill_closed_stdio): EBADF, whatever ran since the write that failed.
  const int error = closed_stdio().out ? EBADF : errno;
  print_error(command, std::string("cannot write the output: ") + (error ? std::strerror(error) : "write error"));
  return status == exit_ok ? exit_task_failed : status;
}

void print_shown_error(std::string_view command, std::string_view shown) {
  std::fprintf(stderr, "ferry%s%.*s: %.*s\n", command.empty() ? "" : " ",
               static_cast<int>(command.size()), command.data(), static_cast<int>(shown.size()),
               shown.data());
  std::fflush(stderr);
}

void print_error(std::string_view command, std::string_view message) {
  // One line, whatever it quotes (a task's name or message, a path, an argument): a newline in
  // it would start a line that looks like ferry's own ("ferry run: TaskError: ...").
  print_shown_error(command, terminal_line(message));
}

std::string remote_stack(const Failure& failure) {
  if (!failure.stack_of) return {};
  try {
    std::rethrow_exception(failure.stack_of);
  } catch (const TaskError& e) {
    return e.remote_stack();
  } catch (const TerminatedWorkerError& e) {
    return e.remote_stack();
  } catch (...) {
  }
  return {};
}

void print_remote_stack(const Failure& failure) {
  // Symbolized here, not in describe(): only a stack that is shown costs its modules' reads.
  const std::string stack = remote_stack(failure);
  if (stack.empty()) return;
  // Always, like Python's traceback of an uncaught exception: the user needs it to find the bug,
  // and stderr is not the results' stream.
  std::string text = "remote stack (worker):\n  ";
  // Shown already (symbolize: a plugin's names as message_text, one frame a line): message_text
  // again leaves that as it is (a task's \x1b is not \\x1b here) and still stops any control.
  for (char c : detail::message_text(stack)) {
    text += c;
    if (c == '\n') text += "  ";
  }
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

int report(std::string_view command, const Failure& failure, std::string_view where) {
  std::string head = where.empty() ? std::string() : std::string(where) + ": ";
  head += failure.type + ": ";
  const std::string_view message(failure.message);
  std::string_view own = message.substr(failure.own_at, failure.own_size);
  // A message of several lines (a parser's list of problems, a wrapped exception) is shown as
  // lines, not as one line with \x0a in each break; a line break at its end shows nothing.
  // Every line after the first is indented: only ferry's own lines start at the margin.
  while (own.ends_with('\n')) own.remove_suffix(1);
  print_shown_error(command, terminal_line(head + std::string(message.substr(0, failure.own_at))) +
                           terminal_text(own, "\n    ") +
                           terminal_line(message.substr(failure.own_at + failure.own_size)));
  print_remote_stack(failure);
  return failure.code;
}

std::optional<std::size_t> signature_arity(std::string_view signature) {
  // "R(P1,P2,...)": the parameter list is the last top-level parenthesised group. Types nest
  // <>, () and [] ("map<string,i64>", "(anonymous namespace)::T"), so commas count at depth 0.
  if (signature.empty() || signature.back() != ')') return std::nullopt;
  int depth = 0;
  std::size_t open = std::string_view::npos;
  for (std::size_t i = signature.size(); i-- > 0;) {
    char c = signature[i];
    if (c == ')' || c == '>' || c == ']') ++depth;
    if (c == '(' || c == '<' || c == '[') --depth;
    if (depth == 0) {
      open = i;
      break;
    }
  }
  if (open == std::string_view::npos || signature[open] != '(') return std::nullopt;
  std::string_view params = signature.substr(open + 1, signature.size() - open - 2);
  if (params.find_first_not_of(' ') == std::string_view::npos) return 0;
  std::size_t n = 1;
  depth = 0;
  for (char c : params) {
    if (c == '(' || c == '<' || c == '[') ++depth;
    if (c == ')' || c == '>' || c == ']') --depth;
    if (c == ',' && depth == 0) ++n;
  }
  return n;
}

}  // namespace ferry::cli
