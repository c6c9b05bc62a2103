// SPDX-License-Identifier: BSD-3-Clause
// `ferry run TASK ARG...`: one task on JSON arguments, its result printed as JSON.
#include <algorithm>
#include <cctype>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>

#include "commands.hpp"
#include "json.hpp"

namespace ferry::cli {

namespace {

/// Example command lines with what they print, aligned.
std::string examples(std::initializer_list<std::pair<std::string_view, std::string_view>> rows) {
  std::size_t width = 0;
  for (const auto& [command, output] : rows) width = std::max(width, command.size());
  std::string out;
  for (const auto& [command, output] : rows)
    out += "  " + std::string(command) + std::string(width - command.size() + 4, ' ') +
           std::string(output) + "\n";
  return out;
}

}  // namespace

CLI::App* setup_run(CLI::App& app, RunOptions& options) {
  CLI::App* sub = app.add_subcommand("run", "Run one task on JSON arguments and print its result");
  sub->add_option("TASK", options.task, "task name, or plugin:task to choose among plugins")
      ->type_name("")
      ->required();
  // ARG is declared for --help only. Its values stay unparsed and reach the root app's extras
  // (main.cpp), because a CLI11 vector positional splits "[1,2]" into "1" and "2" (its own list
  // syntax); the validator refuses every value so that this option never takes one.
  sub->add_option("ARG", options.arg_help,
                  wrap("one JSON value per argument of the task, in order: 42, 2.5, '\"text\"', "
                       "'[1,2]', '{\"value0\": 1, \"value1\": 2}', true, null. Put -- before "
                       "the first ARG when one starts with '-' and is not a number"))
      ->type_name("")
      ->check([](const std::string&) { return std::string("(help only)"); });
  sub->validate_positionals();
  sub->add_flag("--raw", options.raw,
                wrap("print the worker's result line as is ({\"value0\": RESULT}, or {} for a "
                     "void task) instead of the result value: one JSON object, compact, its "
                     "strings' terminal controls escaped (\\u009b, \\u202e, ...) as in every "
                     "line ferry prints"));
  add_containment_options(*sub, options.containment);
  add_trace_option(*sub, options.containment);
  add_initializer_options(*sub, options.containment);
  sub->footer(
      wrap("Runs TASK once in a ferry-worker and prints its result as one line of JSON on stdout "
           "(nothing for a void task). The ARGs travel as {\"value0\": ARG1, \"value1\": ARG2, "
           "...} through cereal's JSON archive: a struct argument is an object of its serialized "
           "fields, named \"value0\", \"value1\", ... unless the type names them. The number "
           "of ARGs is checked against the task's signature (ferry list). A task that fails prints "
           "the error type and message on stderr. -j does not matter: one worker runs the task.",
           100) +
      "\n\nExamples:\n" + examples({{"ferry run add 40 2", "42"},
                                     {"ferry run greet '\"you\"'", "\"hello, you\""},
                                     {"ferry run sum '[1.5, 2.5]'", "4.0"},
                                     {"ferry run scale '{\"value0\": 1, \"value1\": 2}' 3",
                                      "{\"value0\":3.0,\"value1\":6.0}"},
                                     {"ferry run noop", "(nothing: a void task)"},
                                     {"ferry run checked_isqrt -- -4",
                                      "exit 1, stderr: TaskError: ... negative: -4"}}) +
      "\n" + containment_options_help() + "\n" + global_options_help() + "\n" + exit_codes_help());
  return sub;
}

int run_run(const RunOptions& options, const GlobalOptions& global) {
  // Every ARG is checked before anything starts: a bad one is a usage error, said precisely.
  std::optional<std::string> line = json_arguments("run", "argument", options.args, options.args_after_dashes);
  if (!line) return exit_usage;

  try {
    // Looked up here, not only by the executor: an unknown task fails before any worker starts,
    // and the argument count is checked against the signature (cereal's JSON archive would
    // silently ignore extra members).
    TaskInfo info = find_task(global, options.task);
    if (auto arity = signature_arity(info.signature); arity && *arity != options.args.size()) {
      print_error("run", "task '" + info.name + "' takes " + std::to_string(*arity) +
                             (*arity == 1 ? " argument" : " arguments") + " (" + info.signature +
                             "), got " + std::to_string(options.args.size()));
      return exit_usage;
    }
    std::optional<Call> initializer = initializer_call("run", global, options.containment);
    if (!initializer) return exit_usage;
    Stdio io = isolate_stdio(/*take_stdin=*/false);
    Executor executor(executor_options(global, 1, options.containment, std::move(*initializer)));
    std::string result =
        executor.submit_json(TaskRef{.library = info.library, .name = info.name}, std::move(*line)).get();
    std::string error, value;
    json::Outcome outcome{};
    while (!result.empty() && (result.back() == '\n' || result.back() == '\r')) result.pop_back();
    // A hostile result may be megabytes long: its start only is quoted, as it was before it was
    // read (in place).
    const std::string head = result.size() > 80 ? result.substr(0, 80) + "..." : result;
    if (options.raw) {
      // The line as the worker wrote it, but only if it is one JSON object, and printable: any
      // plugin's code can write its own result line, and an escape sequence or a carriage return
      // after the object ({"value0":1}\x1b]52;...\rfake) went to the terminal as it was, as did a
      // string's C1 or bidirectional controls. Written again compact (json::append_value: the
      // worker's own line is compact already, so it is the same text), which also leaves no
      // whitespace of the worker's choosing (a carriage return) between its tokens.
      if (!json::append_value(value, result, error) || value.empty() || value.front() != '{') {
        print_error("run", "the worker's result is not a JSON object (" + (error.empty() ? "another value" : error) +
                               "): " + head);
        return exit_task_failed;
      }
      result = std::string();  // its memory, before the line is made printable
      json::make_printable(value, 0);
      value += '\n';
      std::fwrite(value.data(), 1, value.size(), io.out);
      return finish_output("run", io.out, exit_ok);
    }
    // Read as it is written out, without a document of it (json::append_result): a result of
    // 80 MB took 730 MB here.
    if (!json::append_result(value, result, outcome, error)) {
      print_error("run", "the worker's result is not a JSON object (" + error + "): " + head);
      return exit_task_failed;
    }
    result = std::string();  // its memory, before the line is written
    if (outcome != json::Outcome::none) {  // a void task's {}: nothing
      value += '\n';
      std::fwrite(value.data(), 1, value.size(), io.out);
    }
    return finish_output("run", io.out, exit_ok);
  } catch (...) {
    return report("run", describe(std::current_exception()));
  }
}

}  // namespace ferry::cli
