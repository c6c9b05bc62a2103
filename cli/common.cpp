// SPDX-License-Identifier: BSD-3-Clause
// What every subcommand shares: exit codes, the plugin path, executor options, error reports.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include <ferry/ferry.hpp>

#include "commands.hpp"

namespace ferry::cli {

std::string exit_codes_help(std::string_view which, std::string_view one) {
  static constexpr const char* lines[] = {
      "  0  success\n",
      "  1  a task failed (with map --keep-going: some line failed)\n",
      "  2  usage error: bad options or arguments, bad JSON, arguments that do not fit the task\n",
      "  3  plugin or task lookup error (PluginError): no such task, ambiguous name, unsafe plugin\n",
      "  4  the pool could not run (BrokenProcessPool): ferry-worker missing or not startable\n"};
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

ExecutorOptions executor_options(const GlobalOptions& global, std::size_t workers) {
  ExecutorOptions o;
  o.max_workers = workers;
  o.plugin_dirs.assign(global.plugin_dirs.begin(), global.plugin_dirs.end());
  o.worker_path = global.worker;
  return o;
}

namespace {

/// `fd` duplicated to a new close-on-exec descriptor above 2, or -1.
int move_fd(int fd) { return ::fcntl(fd, F_DUPFD_CLOEXEC, 3); }

}  // namespace

Stdio isolate_stdio(bool take_stdin) {
  Stdio s{stdout, take_stdin ? STDIN_FILENO : -1};
  std::fflush(stdout);
  if (int out = move_fd(STDOUT_FILENO); out >= 0) {
    if (std::FILE* f = ::fdopen(out, "w"); f && ::dup2(STDERR_FILENO, STDOUT_FILENO) >= 0) {
      s.out = f;
    } else if (!f) {
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
  return s;
}

TaskInfo find_task(const GlobalOptions& global, std::string_view name) {
  auto dirs = plugin_path(global);
  if (dirs.empty())  // the library's message would name ExecutorOptions: say it the CLI's way
    throw PluginError::task_not_found(std::string(name), "no plugin directories; give --plugin-dir "
                                                         "DIR or set FERRY_PLUGIN_PATH");
  PluginIndex index(std::move(dirs));
  return index.find(name);
}

Failure describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const TaskError& e) {
    return {exit_task_failed, "TaskError", e.what()};
  } catch (const TerminatedWorkerError& e) {
    return {exit_task_failed, "TerminatedWorkerError", e.what()};
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
    return {exit_pool, "BrokenProcessPool", e.what()};
  } catch (const CancelledError& e) {
    return {exit_task_failed, "CancelledError", e.what()};
  } catch (const TimeoutError& e) {
    return {exit_task_failed, "TimeoutError", e.what()};
  } catch (const Error& e) {
    return {exit_task_failed, "Error", e.what()};
  } catch (const std::invalid_argument& e) {
    return {exit_usage, "invalid argument", e.what()};
  } catch (const std::exception& e) {
    return {exit_task_failed, "error", e.what()};
  } catch (...) {
    return {exit_task_failed, "error", "unknown exception"};
  }
}

void print_error(std::string_view command, std::string_view message) {
  std::fprintf(stderr, "ferry %.*s: %.*s\n", static_cast<int>(command.size()), command.data(),
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
}

int report(std::string_view command, const Failure& failure) {
  print_error(command, failure.type + ": " + failure.message);
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
