// SPDX-License-Identifier: BSD-3-Clause
// `ferry info`: version, CPUs, the worker, the plugin path and the FERRY_WRAP setup.
#include <cstdio>
#include <cstdlib>

#include <CLI/CLI.hpp>
#include <ferry/ferry.hpp>

#include "commands.hpp"
#include "host/containment.hpp"
#include "json.hpp"
#include "platform/containment.hpp"
#include "platform/spawn.hpp"

namespace ferry::cli {

namespace fs = std::filesystem;

CLI::App* setup_info(CLI::App& app, InfoOptions& options) {
  CLI::App* sub = app.add_subcommand(
      "info", "Show the version, CPUs, worker, plugin path, FERRY_WRAP setup and containment");
  sub->add_flag("--json", options.json, "print one JSON object instead of the text");
  sub->footer(wrap("Prints ferry's version; cpu_count() (hardware threads, affinity, cgroup quota, "
                   "$FERRY_MAX_CPU_COUNT); the ferry-worker that would run (--worker, else "
                   "$FERRY_WORKER, else the one installed with libferry) and whether it exists; the "
                   "plugin directories (--plugin-dir, then $FERRY_PLUGIN_PATH); the FERRY_WRAP cache "
                   "directory ($FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else ~/.cache/ferry), "
                   "compiler ($FERRY_CXX) and flags ($FERRY_WRAP_FLAGS); and what this machine "
                   "offers to contain workers (run and map --sandbox, --memory, ...): how a "
                   "worker's descendants end with it, how --processes is enforced, the Landlock "
                   "ABI (0 in the JSON: none), seccomp, user namespaces, a network namespace, a "
                   "pids cgroup, whether ferry runs as root, and where a sandbox without --write makes "
                   "its private directory ($TMPDIR, or /tmp when another user could change what is "
                   "made under $TMPDIR, saying why).",
                   100) +
              "\n\n" + global_options_help() + "\n" + exit_codes_help("012", "the output could not be written"));
  return sub;
}

int run_info(const InfoOptions& options, const GlobalOptions& global) {
  try {
    const fs::path worker = worker_path(global);
    const bool worker_ok = detail::is_executable_file(worker);
    const std::vector<fs::path> dirs = plugin_path(global);
    const WrapOptions wrap = wrap_options();
    // Resolved as FERRY_WRAP resolves it (wrap_compiler.cpp's make_setup): the program of a value
    // that may carry arguments ('g++ -O2', 'ccache g++').
    const auto compiler = detail::find_program(detail::command_words(wrap.compiler.string()).front());
    const unsigned cpus = cpu_count();
    const detail::ContainmentSupport& contain = detail::containment_support();
    const detail::PrivateDirPlace place = detail::private_dir_place();
    const char* tmpdir = std::getenv("TMPDIR");
    std::error_code ec;

    std::string out;
    if (options.json) {
      rj::StringBuffer buffer;
      rj::Writer<rj::StringBuffer> w(buffer);
      auto str = [&](const std::string& s) {
        w.String(s.c_str(), static_cast<rj::SizeType>(s.size()));
      };
      w.StartObject();
      w.Key("version");
      str(ferry::version());
      w.Key("cpu_count");
      w.Uint(cpus);
      w.Key("worker");
      w.StartObject();
      w.Key("path");
      str(worker.string());
      w.Key("exists");
      w.Bool(worker_ok);
      w.EndObject();
      w.Key("plugin_path");
      w.StartArray();
      for (const auto& d : dirs) {
        w.StartObject();
        w.Key("path");
        str(d.string());
        w.Key("exists");
        w.Bool(fs::is_directory(d, ec));
        w.EndObject();
      }
      w.EndArray();
      w.Key("wrap");
      w.StartObject();
      w.Key("cache_dir");
      str(wrap.cache_dir.string());
      w.Key("compiler");
      str(wrap.compiler.string());
      w.Key("compiler_path");
      if (compiler) {
        str(compiler->string());
      } else {
        w.Null();
      }
      w.Key("flags");
      w.StartArray();
      for (const auto& f : wrap.flags) str(f);
      w.EndArray();
      w.EndObject();
      w.Key("containment");
      w.StartObject();
      w.Key("descendants");
      str(contain.descendants);
      w.Key("processes");
      str(contain.processes);
      w.Key("memory");
      str(contain.memory);
      w.Key("landlock_abi");
      w.Int(contain.landlock_abi);
      for (auto [key, value] : {std::pair{"seccomp", contain.seccomp},
                                {"user_namespaces", contain.user_namespaces},
                                {"network_namespace", contain.network_namespace},
                                {"pids_cgroup", contain.pids_cgroup},
                                {"memory_cgroup", contain.memory_cgroup},
                                {"root", contain.root}}) {
        w.Key(key);
        w.Bool(value);
      }
      w.EndObject();
      // Where a sandbox without --write makes its private directory, and why not under $TMPDIR.
      w.Key("private_directory");
      w.StartObject();
      for (auto [key, value] : {std::pair{"base", place.base.string()},
                                {"tmpdir_refused", place.tmpdir_refused},
                                {"error", place.error}}) {
        w.Key(key);
        if (value.empty()) {
          w.Null();
        } else {
          str(value);
        }
      }
      w.EndObject();
      w.EndObject();
      // Paths and flags come from the environment: RapidJSON escapes the controls below U+0020,
      // printable() DEL, the C1 and bidirectional controls and bytes that are not UTF-8 (the JSON
      // stays valid).
      out = json::printable(std::string_view(buffer.GetString(), buffer.GetSize()));
      out += '\n';
    } else {
      // Values come from the environment and the file system: shown as text, one line each.
      auto field = [&](const char* name, const std::string& value) {
        out += std::string(name) + std::string(14 - std::string_view(name).size(), ' ') +
               terminal_line(value) + "\n";
      };
      field("version", ferry::version());
      field("cpu_count", std::to_string(cpus));
      field("worker", worker.string() + (worker_ok ? "" : "  (missing or not executable)"));
      if (dirs.empty()) {
        field("plugin path", "(none: use --plugin-dir or set FERRY_PLUGIN_PATH)");
      } else {
        for (std::size_t i = 0; i < dirs.size(); ++i)
          field(i == 0 ? "plugin path" : "",
                dirs[i].string() + (fs::is_directory(dirs[i], ec) ? "" : "  (not a directory)"));
      }
      field("wrap cache", wrap.cache_dir.string());
      field("wrap compiler", wrap.compiler.string() +
                                 (compiler ? (compiler->string() == wrap.compiler.string()
                                                  ? std::string()
                                                  : "  (" + compiler->string() + ")")
                                           : std::string("  (not found)")));
      std::string flags;
      for (const auto& f : wrap.flags) flags += (flags.empty() ? "" : " ") + f;
      field("wrap flags", flags);
      out += "containment\n";
      auto fact = [&](std::string_view name, const std::string& value) {
        out += "  " + std::string(name) + std::string(19 - name.size(), ' ') + terminal_line(value) + "\n";
      };
      auto yes = [](bool b) { return std::string(b ? "yes" : "no"); };
      fact("descendants", contain.descendants);
      fact("processes limit", contain.processes);
      fact("memory limit", contain.memory);
      fact("Landlock ABI", contain.landlock_abi > 0 ? std::to_string(contain.landlock_abi) : "none");
      fact("seccomp", yes(contain.seccomp));
      fact("user namespaces", yes(contain.user_namespaces));
      fact("network namespace", yes(contain.network_namespace));
      fact("pids cgroup", yes(contain.pids_cgroup));
      fact("memory cgroup", yes(contain.memory_cgroup));
      fact("root", yes(contain.root));
      // Where a sandbox without --write makes its private directory, and why not under $TMPDIR.
      std::string dir = place.base.empty() ? "none: " + place.error : place.base.string();
      if (!place.tmpdir_refused.empty())
        dir += "  (not $TMPDIR " + std::string(tmpdir ? tmpdir : "") + ": " + place.tmpdir_refused + ")";
      fact("private directory", dir);
    }
    std::fwrite(out.data(), 1, out.size(), output());
    return finish_output("info", output(), exit_ok);
  } catch (...) {
    return report("info", describe(std::current_exception()));
  }
}

}  // namespace ferry::cli
