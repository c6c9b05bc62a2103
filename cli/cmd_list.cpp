// SPDX-License-Identifier: BSD-3-Clause
// `ferry list [DIR...]`: the tasks of the plugins in a set of directories, read from their manifests.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>

#include "commands.hpp"
#include "json.hpp"

namespace ferry::cli {

namespace fs = std::filesystem;

CLI::App* setup_list(CLI::App& app, ListOptions& options) {
  CLI::App* sub = app.add_subcommand("list", "List the tasks of the plugins, with their signatures");
  sub->add_option("DIR", options.dirs,
                  wrap("plugin directories to list (not recursive); default: the --plugin-dir "
                       "directories, then those of $FERRY_PLUGIN_PATH"))
      ->type_name("");
  sub->add_flag("--json", options.json,
                wrap("print one JSON object per task and line instead of the table: name, "
                     "signature, plugin, library, fingerprint, abi"));
  sub->footer(wrap("Prints a table of every task: its name, its signature (canonical types: i32, "
                   "f64, string, vector<f64>, ...) and the plugin file. The manifests are read "
                   "from the files: no plugin is loaded. Files of the directories that are not "
                   "usable plugins are reported on stderr, one line each with the reason.",
                   100) +
              "\n\n" + global_options_help() + "\n" + exit_codes_help("012", "the output could not be written"));
  return sub;
}

namespace {

std::string task_json(const TaskInfo& t) {
  rj::StringBuffer buffer;
  rj::Writer<rj::StringBuffer> w(buffer);
  auto key = [&](const char* k) { w.Key(k); };
  auto str = [&](const std::string& s) { w.String(s.c_str(), static_cast<rj::SizeType>(s.size())); };
  char fingerprint[24];
  std::snprintf(fingerprint, sizeof fingerprint, "%016" PRIx64, t.fingerprint);
  w.StartObject();
  key("name");
  str(t.name);
  key("signature");
  str(t.signature);
  key("plugin");
  str(t.plugin);
  key("library");
  str(t.library.string());
  key("fingerprint");
  str(fingerprint);
  key("abi");
  w.Uint(t.abi);
  w.EndObject();
  // A plugin's names and path are the ELF's word: nothing in them reaches a terminal raw.
  return json::printable(std::string_view(buffer.GetString(), buffer.GetSize()));
}

}  // namespace

int run_list(const ListOptions& options, const GlobalOptions& global) {
  // A directory named on the command line (DIR, or --plugin-dir when no DIR is given) must be
  // one: a typo listed an empty table with exit status 0. $FERRY_PLUGIN_PATH is a search path,
  // whose entries that cannot be read are skipped and said, as run and map skip them.
  const std::vector<std::string>& named = options.dirs.empty() ? global.plugin_dirs : options.dirs;
  for (const auto& d : named) {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) {
      print_error("list", "not a directory: " + d);
      return exit_usage;
    }
    // Nor one this user cannot read: its empty table, exit status 0, read as "no plugins there".
    if (fs::directory_iterator listing(d, ec); ec) {
      print_error("list", "cannot read directory " + d + ": " + ec.message());
      return exit_usage;
    }
  }
  std::vector<fs::path> dirs;
  if (!options.dirs.empty()) {
    dirs.assign(options.dirs.begin(), options.dirs.end());
  } else {
    dirs = plugin_path(global);
  }
  if (dirs.empty()) {
    print_error("list", "no plugin directories: give DIR, use --plugin-dir, or set FERRY_PLUGIN_PATH");
    return exit_usage;
  }

  std::vector<TaskInfo> tasks;
  std::vector<SkippedFile> skipped;
  try {
    PluginIndex index(dirs);
    tasks = index.tasks();
    skipped = index.skipped();
  } catch (...) {
    return report("list", describe(std::current_exception()));
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const TaskInfo& a, const TaskInfo& b) {
    return a.name != b.name ? a.name < b.name : a.library < b.library;
  });

  std::string out;
  if (options.json) {
    for (const auto& t : tasks) out += task_json(t) + "\n";
  } else {
    // A plugin's names and its path are shown as text on one line each (terminal_line): an ELF
    // can say anything, and a directory's name too, a newline that would make a row of its own.
    struct Shown {
      std::string name, signature, library;
    };
    std::vector<Shown> shown;
    std::size_t name_width = 4, signature_width = 9;
    for (const auto& t : tasks) {
      shown.push_back({terminal_line(t.name), terminal_line(t.signature), terminal_line(t.library.string())});
      name_width = std::max(name_width, shown.back().name.size());
      signature_width = std::max(signature_width, shown.back().signature.size());
    }
    auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
      out += a + std::string(name_width - a.size() + 2, ' ') + b +
             std::string(signature_width - b.size() + 2, ' ') + c + "\n";
    };
    row("TASK", "SIGNATURE", "PLUGIN");
    for (const auto& t : shown) row(t.name, t.signature, t.library);
  }
  std::fwrite(out.data(), 1, out.size(), output());
  const int status = finish_output("list", output(), exit_ok);
  for (const auto& s : skipped) print_error("list", "skipped " + s.path.string() + ": " + s.reason);
  return status;
}

}  // namespace ferry::cli
