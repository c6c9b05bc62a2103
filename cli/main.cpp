// SPDX-License-Identifier: BSD-3-Clause
// The ferry command: list, run and map plugin tasks, show the setup, manage the FERRY_WRAP cache,
// turn a trace into an HTML report.
//
// Exit status, the same for every subcommand (and in `ferry --help`):
//   0  success
//   1  a task failed (TaskError, TerminatedWorkerError, ResourceLimitError, SandboxViolationError,
//      ...); with map --keep-going: some line failed; with cache clear: a file could not be removed;
//      with report: the report could not be written; any subcommand (--help and --version too):
//      its output could not be written (finish_output)
//   2  usage error: bad options or arguments, an ARG or input line that is not JSON, arguments
//      that do not fit the task (wrong count, or SerializationError while decoding them), a trace
//      that cannot be read or is not a trace
//   3  plugin or task lookup error (PluginError, UnresolvableTaskError): no such task, ambiguous
//      name, unsafe plugin
//   4  the pool could not run (BrokenProcessPool): ferry-worker missing or not startable
// No exception leaves main: every subcommand turns errors into one of these.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>

#include "commands.hpp"

namespace ferry::cli {
namespace {

/// The subcommands given, as "cache list" ("" for ferry itself): the name every message of the
/// command starts with, "ferry cache list: ...". After a failed parse, the subcommands parsed up
/// to the error (CLI11 records a subcommand before it parses the words after it).
std::string command_of(const CLI::App& app) {
  std::string command;
  for (const CLI::App* at = &app; !at->get_subcommands().empty();) {
    at = at->get_subcommands().front();
    command += (command.empty() ? "" : " ") + at->get_name();
  }
  return command;
}

/// After a failed parse, the word given where a subcommand was required and none matched
/// ("ferry lsit", "ferry cache lsit"), as "<command>: unknown subcommand 'WORD' (its subcommands)";
/// "" when that is not what failed. CLI11 takes such a word as an extra (run's ARGs need extras)
/// and said only "A subcommand is required", as if none had been given.
std::pair<std::string, std::string> unknown_subcommand(const CLI::App& app) {
  const CLI::App* at = &app;
  while (!at->get_subcommands().empty()) at = at->get_subcommands().front();
  if (at->get_require_subcommand_min() == 0) return {};
  const std::vector<std::string> extras = app.remaining(/*recurse=*/true);
  if (extras.empty() || extras.front().empty() || extras.front().front() == '-') return {};
  std::string names;
  for (const CLI::App* sub : at->get_subcommands([](const CLI::App*) { return true; }))
    names += (names.empty() ? "" : ", ") + sub->get_name();
  return {command_of(app), "unknown subcommand '" + extras.front() + "' (" + names + ")"};
}

int main(int argc, char** argv) {
  fill_closed_stdio();  // before anything opens a descriptor
  CLI::App app("ferry " + std::string(ferry::version()) +
                   ": run the tasks of shared-library plugins in a pool of ferry-worker processes.",
               "ferry");
  // Subcommands hand options they do not know to this app, so that global options may come
  // after the subcommand too: `ferry map -j 2 ...`, `ferry run --plugin-dir DIR add 1 2`.
  app.fallthrough();
  app.require_subcommand(1);
  app.set_version_flag("--version", "ferry " + std::string(ferry::version()));

  GlobalOptions global;
  app.add_option("--plugin-dir", global.plugin_dirs,
                 wrap("a directory of plugins (repeatable); searched before those of "
                      "$FERRY_PLUGIN_PATH (colon-separated)"))
      ->type_name("DIR")
      ->allow_extra_args(false);
  app.add_option("-j,--workers", global.workers,
                 "worker processes for map; 0 or absent: cpu_count() = " + std::to_string(cpu_count()))
      ->type_name("N")
      ->check(whole_number_in(0, 4096));
  app.add_option("--worker", global.worker,
                 wrap("the ferry-worker executable (default: $FERRY_WORKER, else the one "
                      "installed with libferry; see ferry info)"))
      ->type_name("PATH");

  ListOptions list;
  RunOptions run;
  MapOptions map;
  InfoOptions info;
  CacheOptions cache;
  ReportOptions report;
  CLI::App* list_cmd = setup_list(app, list);
  CLI::App* run_cmd = setup_run(app, run);
  CLI::App* map_cmd = setup_map(app, map);
  CLI::App* info_cmd = setup_info(app, info);
  CLI::App* cache_cmd = setup_cache(app, cache);
  CLI::App* report_cmd = setup_report(app, report);
  // After the subcommands (they copy this setting when created): run's ARGs fall through to
  // here unparsed, and so would anything else nobody takes, which is refused below.
  app.allow_extras();
  app.footer("Run `ferry SUBCOMMAND --help` for the options of each.\n\n" +
             exit_codes_help("01234",
                             "a task failed, also past a limit or its sandbox (with map --keep-going: some line\n"
                             "     failed); the output could not be written; cache clear could not remove a file;\n"
                             "     report could not write the page"));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (auto [command, message] = unknown_subcommand(app); !message.empty()) {
      print_error(command, message);
      std::fprintf(stderr, "Run with --help for more information.\n");
      return exit_usage;
    }
    if (e.get_exit_code() != 0) {
      // CLI11's own message (an option it refuses, a missing argument), prefixed as every other
      // message of the command is ("ferry run: TASK is required"), and shown as text: it quotes
      // what was given (`--memory VALUE`). app.exit(e) printed it bare, whatever the subcommand.
      // With what nobody took ("ferry --bogus" said only that a subcommand is required).
      std::string message = e.what();
      std::string extras;
      // run's ARGs are extras too, once its TASK was given.
      if (!run_cmd->parsed() || run_cmd->get_option("TASK")->count() == 0)
        for (const std::string& extra : app.remaining(/*recurse=*/true)) extras += " " + extra;
      if (!extras.empty()) message += "; unexpected arguments:" + extras;
      print_error(command_of(app), message);
      std::fprintf(stderr, "Run with --help for more information.\n");
      return exit_usage;
    }
    // The help or the version, written as results are (output(): a full non-blocking pipe is
    // waited for). One that cannot be written (`ferry --help > /dev/full`, a closed stdout) is
    // lost output, exit 1, said by the subcommand whose help it is ("" for ferry's own).
    std::ostringstream text;
    app.exit(e, text, std::cerr);
    const std::string shown = std::move(text).str();
    std::fwrite(shown.data(), 1, shown.size(), output());
    return finish_output(command_of(app), output(), exit_ok);
  }

  std::vector<std::string> extras = app.remaining();
  if (run_cmd->parsed()) {
    run.args = std::move(extras);
    // Everything after the first -- is an ARG (TASK may be among them, the first).
    for (int i = 1; i < argc; ++i)
      if (std::string_view(argv[i]) == "--") {
        run.args_after_dashes = std::min(static_cast<std::size_t>(argc - i - 1), run.args.size());
        break;
      }
  } else if (!extras.empty()) {
    std::string all;
    for (const auto& e : extras) all += " " + e;
    print_error(command_of(app), "unexpected arguments:" + all);
    std::fprintf(stderr, "Run with --help for more information.\n");
    return exit_usage;
  }

  if (list_cmd->parsed()) return run_list(list, global);
  if (run_cmd->parsed()) return run_run(run, global);
  if (map_cmd->parsed()) return run_map(map, global);
  if (info_cmd->parsed()) return run_info(info, global);
  if (cache_cmd->parsed()) return run_cache(cache, global);
  if (report_cmd->parsed()) return run_report(report, global);
  return exit_usage;  // require_subcommand(1) makes this unreachable
}

}  // namespace
}  // namespace ferry::cli

int main(int argc, char** argv) {
  try {
    return ferry::cli::main(argc, argv);
  } catch (const std::exception& e) {
    const std::string what = ferry::cli::terminal_line(e.what());
    std::fprintf(stderr, "ferry: internal error: %s\n", what.c_str());
  } catch (...) {
    std::fprintf(stderr, "ferry: internal error: unknown exception\n");
  }
  return ferry::cli::exit_task_failed;
}
