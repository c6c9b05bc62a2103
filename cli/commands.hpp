// SPDX-License-Identifier: BSD-3-Clause
// The ferry command's subcommands (one cmd_<name>.cpp each), their options and shared helpers.
#pragma once

#include <cstddef>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/executor.hpp>
#include <ferry/plugin_index.hpp>

#include "platform/format.hpp"

namespace CLI {
class App;
class Validator;
}

namespace ferry::cli {

/// Exit statuses of every subcommand (also in `ferry --help` and main.cpp).
enum Exit : int {
  exit_ok = 0,
  exit_task_failed = 1,   ///< a task failed; with map --keep-going, some line failed
  exit_usage = 2,         ///< bad options or arguments, bad JSON, arguments that do not fit the task
  exit_lookup = 3,        ///< PluginError / UnresolvableTaskError: no such task, ambiguous, unsafe
  exit_pool = 4,          ///< BrokenProcessPool: the worker is missing or cannot start
};

/// The exit-code table of help footers: the codes in `which`; `one`, if given, replaces the
/// meaning of 1 (a subcommand that runs no task).
std::string exit_codes_help(std::string_view which = "01234", std::string_view one = {});
/// The global options, as a help footer paragraph for subcommands.
std::string global_options_help();
/// `text` with its lines broken at spaces to at most `width` columns (help texts: CLI11 2.1
/// does not wrap them).
std::string wrap(std::string_view text, std::size_t width = 70);

/// Options given before (or after) the subcommand.
struct GlobalOptions {
  std::vector<std::string> plugin_dirs;  ///< --plugin-dir, before $FERRY_PLUGIN_PATH
  std::size_t workers = 0;               ///< -j/--workers; 0 = cpu_count()
  std::string worker;                    ///< --worker; empty = default_worker_path()
};

/// --plugin-dir entries followed by $FERRY_PLUGIN_PATH.
std::vector<std::filesystem::path> plugin_path(const GlobalOptions& global);
/// The ferry-worker the executor will run.
std::filesystem::path worker_path(const GlobalOptions& global);
/**
@brief What run and map set on their executor besides the number of workers: the limits and sandbox
of the workers (add_containment_options()), the trace file (add_trace_option()) and the
initializer (add_initializer_options()). The values are checked and converted while parsing, the
initializer's against its task by initializer_call(); executor_options() carries them over.
*/
struct ContainmentOptions {
  Limits limits;    ///< --memory, --cpu, --open-files, --processes, --file-size
  Sandbox sandbox;  ///< --sandbox, --allow-network, --allow-exec, --read, --write, --best-effort
  std::string trace;  ///< --trace FILE; empty: none (FERRY_TRACE still applies)
  std::string initializer;            ///< --initializer TASK; empty: none
  std::vector<std::string> initargs;  ///< --initarg JSON, one per argument of TASK, in order
  double initializer_timeout = 0;     ///< --initializer-timeout SECONDS; 0: none
};
/// Adds the containment options to `sub` (run, map), writing into `options`.
void add_containment_options(CLI::App& sub, ContainmentOptions& options);
/// Adds --trace FILE to `sub` (run, map), writing into `options.trace`.
void add_trace_option(CLI::App& sub, ContainmentOptions& options);
/// Adds --initializer TASK, --initarg JSON (repeatable) and --initializer-timeout SECONDS to
/// `sub` (run, map).
void add_initializer_options(CLI::App& sub, ContainmentOptions& options);
/// `args` (one JSON text each) as the JSON line a task takes, {"value0": ..., "value1": ...}.
/// A text that is not JSON prints "ferry <command>: <what> N is not valid JSON: ..." and gives
/// nullopt. The last `after_dashes` of `args` followed "--" on the command line: ARGs for sure,
/// whose error gives no hint about options.
std::optional<std::string> json_arguments(std::string_view command, std::string_view what,
                                          const std::vector<std::string>& args,
                                          std::size_t after_dashes = 0);
/// The executor's initializer for --initializer and --initarg: found in the plugin path and its
/// argument count checked against its signature. An empty Call without --initializer; nullopt,
/// with the error printed, for a usage error. @throws PluginError when the task is not found
std::optional<Call> initializer_call(std::string_view command, const GlobalOptions& global,
                                     const ContainmentOptions& options);
/// The containment options, as a help footer paragraph.
std::string containment_options_help();
/// Bytes of a SIZE: a whole number with an optional K, M, G or T suffix (powers of 1024; KiB,
/// MiB, GiB and TiB too), at least 1. Sets `error` and returns nullopt otherwise.
std::optional<std::size_t> parse_size(std::string_view text, std::string& error);
/// A CLI11 transform that reads a SIZE (parse_size) and leaves its bytes for CLI11 to store; the
/// error of parse_size is the usage error.
CLI::Validator size_transform();
/// A CLI11 check that the value is a whole number from `lo` to `hi` (-j, --chunksize...):
/// CLI11's Range said "Value x not in range 0 to 4096" of text that is no number at all.
CLI::Validator whole_number_in(std::size_t lo, std::size_t hi);
/// Seconds of a timeout (--timeout, --initializer-timeout): a number more than 0, decimals and
/// exponents too; inf, or one past what a double holds, is infinity: no limit (the library takes
/// a timeout too long for its clock as none). Sets `error` and returns nullopt for NaN, 0, a
/// negative number or text.
std::optional<double> parse_seconds(std::string_view text, std::string& error);
/// A CLI11 check that the value is parse_seconds' (CLI11's PositiveNumber refused inf with a range
/// of 300 digits, and let NaN through).
CLI::Validator seconds_check();
/// Seconds of a DURATION: a whole number with an optional s, m or h suffix, at least 1 second.
std::optional<long long> parse_duration(std::string_view text, std::string& error);

/// Executor options for `workers` processes (0 = cpu_count()), contained and traced as
/// `containment` says.
ExecutorOptions executor_options(const GlobalOptions& global, std::size_t workers,
                                 const ContainmentOptions& containment, Call initializer = {});
/// The task `name` ("task" or "plugin:task") in the plugin path. @throws PluginError
TaskInfo find_task(const GlobalOptions& global, std::string_view name);

/**
@brief The streams of a subcommand that starts workers. Workers inherit descriptors 0-2, so what a
task prints would land in the middle of the JSON results, and a task reading stdin would eat the
input lines: `out` (and `in`, if taken) move to private close-on-exec descriptors, fd 1 then
points at stderr and fd 0 at /dev/null. Call before the Executor starts. Once per process: a later
call returns the first one's streams.
*/
struct Stdio {
  std::FILE* out = nullptr;  ///< the original stdout, as open_output's stream
  int out_fd = -1;           ///< its descriptor (fileno() of `out` is -1)
  int in = -1;               ///< the original stdin's descriptor, when taken
};
Stdio isolate_stdio(bool take_stdin);

/**
@brief A buffered stream of the results written to `fd`, as stdio's but for a full pipe or
terminal whose open file description is non-blocking (O_NONBLOCK, set by a process sharing it:
Node.js, some ssh or multiplexer set-ups): a write that finds no room (EAGAIN) waits until there is
(poll) and goes on where it stopped, no byte lost or written twice; the flag is left as it is, for
the others rely on it. Any other error fails the write as stdio's would, with its errno (EPIPE, or
SIGPIPE as before; ENOSPC; EBADF), which finish_output() reports. Never closes `fd`.
*/
std::FILE* open_output(int fd);
/// open_output(STDOUT_FILENO), made on first use: the stream of every subcommand that starts no
/// workers (list, info, cache, report, the help). After isolate_stdio(), the stream it returned
/// (descriptor 1 is stderr then). Not for use from several threads.
std::FILE* output();

/// For `ferry map` reading `file` ("" or "-": stdin): the message to refuse it with when that input
/// is the very regular file stdout writes to (`ferry map TASK in.jsonl >> in.jsonl`: it read its
/// own results back as input lines and never ended, the file growing until the disk was full);
/// nullopt otherwise, and when either cannot be looked at (the map then says why it cannot read).
/// Call before isolate_stdio().
std::optional<std::string> input_is_output(const std::string& file);

/// Which of descriptors 0, 1 and 2 the command was started without (`ferry map <&-`).
struct ClosedStdio {
  bool in = false;
  bool out = false;
  bool err = false;
};
/// Called first in main: each of descriptors 0, 1 and 2 that is closed gets /dev/null, not
/// close-on-exec (workers inherit 0-2), so that no descriptor made later takes its number (the
/// input reader's eventfd took 0 and `ferry map <&-` waited on it for ever; a worker's channel at
/// 1 or 2 would get the output). stdin's is opened for writing only and stdout's for reading
/// only, so that a read of the one and a write to the other fail with EBADF as they would have
/// (`ferry run add 1 2 >&-` exits 1, "cannot write the output: Bad file descriptor"). Returns
/// which were closed, kept for closed_stdio().
const ClosedStdio& fill_closed_stdio() noexcept;
/// What fill_closed_stdio() found.
const ClosedStdio& closed_stdio() noexcept;

/// An exception turned into what the user sees: exit status, type name, message.
struct Failure {
  int code = exit_task_failed;
  std::string type;     ///< "TaskError", "PluginError", ...
  std::string message;  ///< what()
  /// The error whose remote_stack() print_remote_stack() shows (a TaskError, a
  /// TerminatedWorkerError, or the TaskError of an initializer that broke the pool); null if none.
  /// Kept, not asked: a stack is symbolized when first asked for (~65 ms for each module's first),
  /// and map --keep-going describes every failing line but prints no stack.
  std::exception_ptr stack_of;
  /// The task's own message (TaskError::remote_message()) inside `message`: from `own_at`,
  /// `own_size` bytes (0: none). report() shows its lines as lines; the rest of the message,
  /// which quotes names, stays on one line.
  std::size_t own_at = 0, own_size = 0;
};
Failure describe(std::exception_ptr error);
/// Prints "ferry <command>: <type>: <message>" on stderr ("ferry <command>: <where>: <type>:
/// <message>" when `where` is given, e.g. "lines 3-5"), then the remote stack when there is one
/// ("remote stack (worker):" and its frames, indented), and returns the exit status. The message
/// is shown as terminal_line() shows text, but for the task's own message (Failure::own_at): its
/// lines after the first follow on lines of their own, each indented by four spaces, so that
/// none can pass for a line of ferry's.
int report(std::string_view command, const Failure& failure, std::string_view where = {});
/// The failure's remote stack (TaskError / TerminatedWorkerError::remote_stack()), "" if none:
/// symbolized by this call if nothing asked for it before.
std::string remote_stack(const Failure& failure);
/// Prints the failure's remote stack on stderr, indented under "remote stack (worker):", if any.
void print_remote_stack(const Failure& failure);
/// The end of a subcommand's output: flushes `out` (open_output's stream) and checks that all
/// written to it arrived (a full disk, /dev/full, a closed stdout; a full non-blocking pipe is
/// waited for, no failure). If not, prints "ferry <command>: cannot write the output: <reason>"
/// on stderr and returns exit_task_failed (or `status`, when that is a failure already); else
/// `status`.
int finish_output(std::string_view command, std::FILE* out, int status);
/// Prints "ferry <command>: <message>" ("ferry: <message>" for an empty command) on stderr, on
/// one line: the message as terminal_line() shows it (a newline in a name or message it quotes is
/// \x0a).
void print_error(std::string_view command, std::string_view message);
/// Prints "ferry <command>: <shown>" on stderr, `shown` being terminal text already (built with
/// terminal_line(): print_error with parts escaped their own way).
void print_shown_error(std::string_view command, std::string_view shown);
/// `text` safe to show on a terminal (platform/format.hpp): control characters but newline and
/// tab, DEL, the C1 and bidirectional controls and malformed UTF-8 come out as \xNN, a backslash
/// as \\; other UTF-8 as it is.
using ferry::detail::terminal_text;
/// terminal_text with a newline shown as \x0a too: a name or value on one line of the output (a
/// file name or a variable holding a newline would fake a line of it).
std::string terminal_line(std::string_view text);

/// Number of parameters in a canonical signature such as "i32(i32,map<string,i64>)", or nullopt
/// when the text cannot be read.
std::optional<std::size_t> signature_arity(std::string_view signature);

// ---- subcommands -------------------------------------------------------------------------------

struct ListOptions {
  std::vector<std::string> dirs;
  bool json = false;
};
CLI::App* setup_list(CLI::App& app, ListOptions& options);
int run_list(const ListOptions& options, const GlobalOptions& global);

struct RunOptions {
  std::string task;
  std::vector<std::string> args;  ///< filled from the root app's extras (see main.cpp)
  std::size_t args_after_dashes = 0;  ///< how many of the last `args` followed "--" (main.cpp)
  bool raw = false;
  ContainmentOptions containment;
  std::vector<std::string> arg_help;  ///< never filled: the ARG positional is for --help only
};
CLI::App* setup_run(CLI::App& app, RunOptions& options);
int run_run(const RunOptions& options, const GlobalOptions& global);

struct MapOptions {
  std::string task;
  std::string file;           ///< empty or "-": stdin
  std::size_t workers = 0;    ///< map's own -j; 0 = the global one
  std::size_t chunksize = 0;  ///< 0 = about 4 chunks per worker, at most 1024 lines
  bool keep_going = false;
  bool no_progress = false;
  double timeout = 0;         ///< seconds for the whole map; 0 = none
  std::size_t chunk_bytes = 0;     ///< bytes of arguments that close a chunk; 0 = 4 MiB
  std::size_t max_line_bytes = 0;  ///< the longest input line taken; 0 = FERRY_MAX_FRAME_BYTES
  ContainmentOptions containment;
};
CLI::App* setup_map(CLI::App& app, MapOptions& options);
int run_map(const MapOptions& options, const GlobalOptions& global);

struct InfoOptions {
  bool json = false;
};
CLI::App* setup_info(CLI::App& app, InfoOptions& options);
int run_info(const InfoOptions& options, const GlobalOptions& global);

struct CacheOptions {
  std::string cache_dir;  ///< empty = wrap_options().cache_dir
  bool list = false;
  bool clear = false;
};
CLI::App* setup_cache(CLI::App& app, CacheOptions& options);
int run_cache(const CacheOptions& options, const GlobalOptions& global);

struct ReportOptions {
  std::string trace;
  std::string output;          ///< empty: the trace's path with the extension .html; "-": stdout
  std::size_t max_slices = 0;  ///< 0: trace::ReportLimits' default
};
CLI::App* setup_report(CLI::App& app, ReportOptions& options);
int run_report(const ReportOptions& options, const GlobalOptions& global);

}  // namespace ferry::cli
