// SPDX-License-Identifier: BSD-3-Clause
// The FERRY_* table and its parser.
#include "platform/config.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace ferry::detail {

namespace fs = std::filesystem;

namespace {

constexpr std::array<ConfigVariable, 22> table = {{
    {"FERRY_PLUGIN_PATH", "colon-separated plugin directories, after ExecutorOptions::plugin_dirs",
     "none"},
    {"FERRY_WORKER", "path of ferry-worker", "the one installed with libferry, then $PATH"},
    {"FERRY_ALLOW_UNSAFE_PLUGINS", "1: turn the trust check off for plugins and ferry-worker",
     "0 (checked)"},
    {"FERRY_MAX_CPU_COUNT", "upper bound of cpu_count() (a whole number, at least 1)", "none"},
    {"FERRY_MAX_FRAME_BYTES",
     "largest message accepted, in bytes (K/M/G allowed; at least 64K, and FERRY_SHM_THRESHOLD + 8K)",
     "1G"},
    {"FERRY_SHM_THRESHOLD",
     "bytes above which an argument or result travels through shared memory (K/M/G allowed)", "1M"},
    {"FERRY_SANDBOX_SHARED_BYTES",
     "bytes of shared-memory argument blocks a sandboxed worker is given before it is replaced "
     "(its task may keep them mapped; K/M/G allowed)",
     "4G"},
    {"FERRY_WORKER_SPIN_US",
     "microseconds a worker busy-polls for its next task after a result (0 to 1000000)", "50"},
    {"FERRY_PIPELINE_DEPTH", "tasks in flight per worker, 1 to 64", "adaptive, 1 to 8"},
    {"FERRY_CACHE_DIR", "FERRY_WRAP plugin cache (and the MPI agents' shipped plugins)",
     "$XDG_CACHE_HOME/ferry, else ~/.cache/ferry"},
    {"FERRY_CXX", "compiler for FERRY_WRAP, then its flags ('g++ -O2', 'ccache g++'), split as FERRY_WRAP_FLAGS",
     "the one ferry was built with"},
    {"FERRY_WRAP_FLAGS", "extra compile flags for FERRY_WRAP, split into words as a shell splits them (quotes honoured)",
     "none"},
    {"FERRY_WRAP_TIMEOUT",
     "seconds a FERRY_WRAP compiler run, or the wait for another build's lock, may take before it "
     "is stopped and the wrap fails (1 to 86400)",
     "300"},
    {"FERRY_WRAP_PRELUDES",
     "precompiled preludes (about 110 MB each: one per compiler, flag set and ferry version) a "
     "FERRY_WRAP cache keeps; those used least recently go when a new one is built (1 to 1000)",
     "4"},
    {"FERRY_MPI_TIMEOUT_MS",
     "MPI backend: silence after which a rank (or the host) is declared dead, 1000 to 3600000 "
     "(at least 4 of the 250 ms heartbeats)",
     "3000"},
    {"FERRY_MPI_SPIN_US",
     "MPI backend: microseconds the hub and agents busy-poll after activity before napping "
     "(0 to 1000000)",
     "500"},
    {"FERRY_MPI_RINGS",
     "MPI backend: 1 passes frames between an agent and its worker through shared-memory rings, "
     "0 through their socket",
     "1"},
    {"FERRY_MPI_SHIP", "MPI backend: 'always' ships plugins even when a node has the same path",
     "ship only what a node lacks"},
    {"FERRY_MPI_WORKER", "MPI backend: path of ferry-mpi-worker for spawned agents",
     "the one installed with libferry-mpi"},
    {"FERRY_DEBUG", "1: one line per event on stderr (spawns, exits, protocol errors, wrap builds)",
     "0"},
    {"FERRY_TRACE",
     "trace file every executor writes (Chrome Trace Event JSON for Perfetto), unless "
     "ExecutorOptions::trace names one; one it cannot write is said on stderr and left out",
     "none (no trace)"},
    {"FERRY_TRACE_FILES",
     "how many files FERRY_TRACE gives a process (1 to 10000): then each executor's trace writes over "
     "the oldest of them that no executor is writing (the last ones are kept)",
     "16"},
}};

std::optional<std::string> get(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

std::optional<std::uint64_t> parse_count(std::string_view text) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return n;
}

std::optional<bool> parse_flag(std::string_view text) {
  if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
  if (text == "0" || text == "false" || text == "no" || text == "off" || text.empty()) return false;
  return std::nullopt;
}

/// Reads variables into a Config, collecting what is malformed.
class Reader {
 public:
  explicit Reader(Config& c) : c_(c) {}

  template <class T>
  void number(const char* name, T& out, std::uint64_t min, std::uint64_t max, bool size) {
    auto v = get(name);
    if (!v || v->empty()) return;
    auto n = size ? parse_size(*v) : parse_count(*v);
    if (!n) {
      bad(name, *v, size ? "not a size in bytes (digits, optionally followed by K, M or G)"
                         : "not a whole number");
    } else if (*n < min || *n > max) {
      bad(name, *v, "out of range (" + std::to_string(min) + " to " + std::to_string(max) + ")");
    } else {
      out = static_cast<T>(*n);
    }
  }
  void flag(const char* name, bool& out) {
    auto v = get(name);
    if (!v) return;
    if (auto b = parse_flag(*v)) {
      out = *b;
    } else {
      bad(name, *v, "not 0 or 1");
    }
  }

 private:
  void bad(const char* name, const std::string& value, const std::string& why) {
    c_.problems.push_back(std::string(name) + "='" + value + "': " + why);
  }
  Config& c_;
};

/// The home directory in the password database (HOME unset, as under some daemons and
/// `env -i`); "" when there is none.
std::string home_of_this_user() {
  long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<std::size_t>(size) : 16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(::geteuid(), &pw, buf.data(), buf.size(), &found) != 0 || !found || !pw.pw_dir)
    return {};
  std::string home = pw.pw_dir;
  return home == "/" ? std::string() : home;  // "/" as a home: no place for a cache of ours
}

}  // namespace

std::optional<std::vector<std::string>> split_shell_words(std::string_view text) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) out.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    if (c == '\\') {
      if (i + 1 == text.size()) {
        word += c;  // a trailing backslash is itself, as in sh
      } else if (text[++i] != '\n') {
        word += text[i];
      } else {
        continue;  // backslash-newline: nothing at all (no empty word)
      }
      in_word = true;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      const std::size_t end = text.find('\'', i + 1);
      if (end == std::string_view::npos) return std::nullopt;
      word.append(text.substr(i + 1, end - i - 1));
      i = end;
    } else if (c == '"') {
      for (++i;; ++i) {
        if (i >= text.size()) return std::nullopt;
        if (text[i] == '"') break;
        if (text[i] == '\\' && i + 1 < text.size() && std::string_view("\\\"$`\n").find(text[i + 1]) != std::string_view::npos) {
          if (text[++i] != '\n') word += text[i];
        } else {
          word += text[i];
        }
      }
    } else {
      word += c;
    }
  }
  if (in_word) out.push_back(std::move(word));
  return out;
}

std::span<const ConfigVariable> config_variables() { return table; }

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t unit = 1;
  if (!text.empty()) {
    switch (std::toupper(static_cast<unsigned char>(text.back()))) {
      case 'K': unit = std::uint64_t{1} << 10; break;
      case 'M': unit = std::uint64_t{1} << 20; break;
      case 'G': unit = std::uint64_t{1} << 30; break;
      default: break;
    }
    if (unit != 1) text.remove_suffix(1);
  }
  auto n = parse_count(text);
  if (!n || *n > std::numeric_limits<std::uint64_t>::max() / unit) return std::nullopt;
  return *n * unit;
}

Config Config::read() {
  Config c;
  Reader r(c);
  r.number("FERRY_MAX_FRAME_BYTES", c.max_frame_bytes, 64 * 1024, std::uint64_t{1} << 40, true);
  r.number("FERRY_SHM_THRESHOLD", c.shm_threshold, 1, std::uint64_t{1} << 40, true);
  r.number("FERRY_SANDBOX_SHARED_BYTES", c.sandbox_shared_bytes, 1, std::uint64_t{1} << 50, true);
  std::uint64_t spin = static_cast<std::uint64_t>(c.worker_spin.count());
  r.number("FERRY_WORKER_SPIN_US", spin, 0, 1'000'000, false);
  c.worker_spin = std::chrono::microseconds(spin);
  r.number("FERRY_PIPELINE_DEPTH", c.pipeline_depth, 1, 64, false);
  r.number("FERRY_MAX_CPU_COUNT", c.max_cpu_count, 1, 1u << 20, false);
  r.number("FERRY_TRACE_FILES", c.trace_files, 1, 10'000, false);
  std::uint64_t timeout = static_cast<std::uint64_t>(c.mpi_timeout.count());
  // At least four heartbeats (250 ms each, mpi heartbeat_period): with 200 every idle rank took
  // the host for gone, and the host its ranks, between two heartbeats (a pass of a loop and its
  // nap, a receive budget of 100 ms, a busy node's scheduling come on top of the period).
  r.number("FERRY_MPI_TIMEOUT_MS", timeout, 1000, 3'600'000, false);
  c.mpi_timeout = std::chrono::milliseconds(timeout);
  std::uint64_t wrap_timeout = static_cast<std::uint64_t>(c.wrap_timeout.count());
  r.number("FERRY_WRAP_TIMEOUT", wrap_timeout, 1, 86'400, false);
  c.wrap_timeout = std::chrono::seconds(wrap_timeout);
  r.number("FERRY_WRAP_PRELUDES", c.wrap_preludes, 1, 1000, false);
  std::uint64_t mpi_spin = static_cast<std::uint64_t>(c.mpi_spin.count());
  r.number("FERRY_MPI_SPIN_US", mpi_spin, 0, 1'000'000, false);
  c.mpi_spin = std::chrono::microseconds(mpi_spin);
  r.flag("FERRY_ALLOW_UNSAFE_PLUGINS", c.allow_unsafe_plugins);
  r.flag("FERRY_DEBUG", c.debug);
  r.flag("FERRY_MPI_RINGS", c.mpi_rings);
  if (auto v = get("FERRY_MPI_SHIP"); v && !v->empty()) {
    if (*v == "always") {
      c.mpi_ship_always = true;
    } else {
      c.problems.push_back("FERRY_MPI_SHIP='" + *v + "': the only value is 'always'");
    }
  }
  if (auto v = get("FERRY_PLUGIN_PATH")) {
    std::string_view p(*v);
    while (!p.empty()) {
      auto colon = p.find(':');
      if (auto dir = p.substr(0, colon); !dir.empty()) c.plugin_path.emplace_back(dir);
      if (colon == std::string_view::npos) break;
      p.remove_prefix(colon + 1);
    }
  }
  if (auto v = get("FERRY_WORKER")) c.worker = *v;
  if (auto v = get("FERRY_MPI_WORKER")) c.mpi_worker = *v;
  if (auto v = get("FERRY_TRACE")) c.trace = *v;
  if (auto v = get("FERRY_CXX")) {
    c.cxx = *v;
    // Split when the wrap starts (a value naming one program whole, a path with a space, is
    // taken whole): an unclosed quote is malformed unless the value names such a program.
    struct stat st {};
    const bool one_program = ::stat(v->c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(v->c_str(), X_OK) == 0;
    if (!split_shell_words(*v) && !one_program)
      c.problems.push_back("FERRY_CXX='" + *v +
                           "': a quote is not closed (a compiler and its flags are split into words as a shell "
                           "splits them)");
  }
  if (auto v = get("FERRY_WRAP_FLAGS")) {
    if (auto words = split_shell_words(*v)) {
      c.wrap_flags = std::move(*words);
    } else {
      c.problems.push_back("FERRY_WRAP_FLAGS='" + *v +
                           "': a quote is not closed (the flags are split into words as a shell splits "
                           "them: '-DMSG=\"a b\"' is one flag)");
    }
  }
  // The cache directory is absolute: built plugins are named by it, and a relative name would be
  // judged in this directory and loaded from whatever directory is current later (a background
  // build, a worker). A relative $XDG_CACHE_HOME or $HOME is not used (XDG says to ignore one).
  auto absolute = [](const std::string& dir) { return !dir.empty() && dir.front() == '/'; };
  if (auto v = get("FERRY_CACHE_DIR"); v && !v->empty()) {
    std::error_code ec;
    fs::path dir = fs::absolute(*v, ec);
    c.cache_dir = ec ? fs::path(*v) : dir.lexically_normal();
  } else if (auto x = get("XDG_CACHE_HOME"); x && absolute(*x)) {
    c.cache_dir = fs::path(*x) / "ferry";
  } else if (auto h = get("HOME"); h && absolute(*h)) {
    c.cache_dir = fs::path(*h) / ".cache" / "ferry";
  } else if (std::string home = home_of_this_user(); !home.empty()) {
    c.cache_dir = fs::path(home) / ".cache" / "ferry";
  } else {
    // Last resort, and a name others can guess: anyone may create it first, and the cache's
    // checks (ours, 0700, a trusted way) then refuse it, with a message naming FERRY_CACHE_DIR.
    c.cache_dir = fs::temp_directory_path() / ("ferry-cache-" + std::to_string(::geteuid()));
  }
  return c;
}

void Config::validate() const {
  if (problems.empty()) return;
  std::string all;
  for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
  throw std::invalid_argument("ferry: malformed environment: " + all);
}

}  // namespace ferry::detail
