// SPDX-License-Identifier: BSD-3-Clause
// The FERRY_* table (core/src/platform/config.*): every variable read in one place, a malformed
// value refused when an executor is made, naming the variable; the README lists them all.
#include <pwd.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <doctest/doctest.h>

#include "platform/config.hpp"
#include "platform/debug.hpp"
#include "support/fixture.hpp"

namespace fs = std::filesystem;
using ferry::detail::Config;
using ferry::detail::parse_size;

namespace {
const fs::path source_dir = fs::path(FERRY_TEST_DATA_DIR).parent_path().parent_path();

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("Config.malformed_values_are_refused_at_executor_construction") {
  struct Row {
    const char* name;
    const char* value;
  };
  for (Row row : {Row{"FERRY_MAX_FRAME_BYTES", "abc"}, Row{"FERRY_MAX_FRAME_BYTES", "0"},
                  Row{"FERRY_MAX_FRAME_BYTES", "-1"}, Row{"FERRY_SHM_THRESHOLD", "1.5M"},
                  Row{"FERRY_PIPELINE_DEPTH", "0"}, Row{"FERRY_PIPELINE_DEPTH", "lots"},
                  Row{"FERRY_WORKER_SPIN_US", "-3"}, Row{"FERRY_MAX_CPU_COUNT", "0"},
                  Row{"FERRY_MPI_TIMEOUT_MS", "soon"}, Row{"FERRY_MPI_TIMEOUT_MS", "200"},
                  Row{"FERRY_MPI_TIMEOUT_MS", "999"}, Row{"FERRY_ALLOW_UNSAFE_PLUGINS", "maybe"},
                  Row{"FERRY_DEBUG", "verbose"}, Row{"FERRY_MPI_SHIP", "sometimes"},
                  Row{"FERRY_WRAP_FLAGS", "-DX='open"}, Row{"FERRY_CXX", "g++ -DX=\"open"}}) {
    CAPTURE(row.name);
    CAPTURE(row.value);
    support::ScopedEnv env(row.name, row.value);
    try {
      ferry::Executor ex(support::options(1));
      FAIL("the executor started with a malformed ", row.name);
    } catch (const std::invalid_argument& e) {
      std::string what = e.what();
      CHECK(what.find(std::string(row.name) + "='" + row.value + "'") != std::string::npos);
    }
  }
  {
    // A frame limit fine on its own, but under the shared-memory threshold (1 MiB here, read
    // when libferry loaded) and its heads: payloads between them fit neither (workers were
    // killed for sending a 200 KiB result).
    support::ScopedEnv frame("FERRY_MAX_FRAME_BYTES", "64K");
    CHECK_THROWS_WITH_AS(ferry::Executor(support::options(1)),
                         doctest::Contains("must be at least FERRY_SHM_THRESHOLD (1048576"), std::invalid_argument);
    support::ScopedEnv just_under("FERRY_MAX_FRAME_BYTES", "1031K");
    CHECK_THROWS_AS(ferry::Executor(support::options(1)), std::invalid_argument);
    support::ScopedEnv enough("FERRY_MAX_FRAME_BYTES", "1032K");  // 1 MiB + 8 KiB
    ferry::Executor ex(support::options(1));
    CHECK(ex.submit<int>("square", 5).get() == 25);
  }
  // And good values start it.
  support::ScopedEnv frame("FERRY_MAX_FRAME_BYTES", "64M");
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "2");
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit<int>("square", 4).get() == 16);
}

TEST_CASE("Config.without_home_the_cache_is_in_the_home_the_password_database_gives") {
  // Not a name in /tmp that any other user could create first (or plant as a link).
  support::ScopedEnv cache("FERRY_CACHE_DIR", "");
  support::ScopedEnv xdg("XDG_CACHE_HOME", "");
  support::ScopedEnv home("HOME", "");
  const passwd* pw = ::getpwuid(::geteuid());
  REQUIRE(pw != nullptr);
  REQUIRE(std::string(pw->pw_dir) != "/");
  CHECK(Config::read().cache_dir == fs::path(pw->pw_dir) / ".cache" / "ferry");
}

TEST_CASE("Config.the_cache_directory_is_absolute") {
  // Plugins built there are named by it: a relative name was judged in the host's current
  // directory and loaded from whatever directory was current for a background build or a worker.
  support::TempDir dir;
  support::ScopedCwd cwd(dir.path);
  {
    support::ScopedEnv cache("FERRY_CACHE_DIR", "rel/cache");
    CHECK(Config::read().cache_dir == fs::current_path() / "rel" / "cache");
  }
  support::ScopedEnv cache("FERRY_CACHE_DIR", "");
  {
    // XDG: a relative path in these variables is ignored.
    support::ScopedEnv xdg("XDG_CACHE_HOME", "relative");
    support::ScopedEnv home("HOME", "/somewhere");
    CHECK(Config::read().cache_dir == fs::path("/somewhere/.cache/ferry"));
  }
  support::ScopedEnv xdg("XDG_CACHE_HOME", "");
  support::ScopedEnv home("HOME", "relative-home");
  CHECK(Config::read().cache_dir.is_absolute());
}

TEST_CASE("Config.words_are_split_as_a_shell_splits_them") {
  using ferry::detail::split_shell_words;
  using Words = std::vector<std::string>;
  CHECK(split_shell_words("g++ -O2") == Words{"g++", "-O2"});
  CHECK(split_shell_words(R"(-DMSG="a b" -DQ='c "d"' e\ f)") == Words{"-DMSG=a b", "-DQ=c \"d\"", "e f"});
  // A backslash-newline is nothing (it was an empty word, refused as a flag ''), a trailing
  // backslash itself (it was dropped), as in sh.
  CHECK(split_shell_words("a \\\n b") == Words{"a", "b"});
  CHECK(split_shell_words("a\\\nb") == Words{"ab"});
  CHECK(split_shell_words("-DX=a\\") == Words{"-DX=a\\"});
  CHECK(split_shell_words("") == Words{});
  CHECK_FALSE(split_shell_words("'open").has_value());
  CHECK_FALSE(split_shell_words("\"open").has_value());
}

TEST_CASE("Config.sizes_take_binary_units") {
  CHECK(parse_size("1048576") == std::uint64_t{1} << 20);
  CHECK(parse_size("64K") == std::uint64_t{64} << 10);
  CHECK(parse_size("64m") == std::uint64_t{64} << 20);
  CHECK(parse_size("2G") == std::uint64_t{2} << 30);
  CHECK_FALSE(parse_size(""));
  CHECK_FALSE(parse_size("M"));
  CHECK_FALSE(parse_size("-1"));
  CHECK_FALSE(parse_size(" 5"));
  CHECK_FALSE(parse_size("5 M"));
  CHECK_FALSE(parse_size("99999999999999999999"));
  CHECK_FALSE(parse_size("17179869184G"));  // 2^34 GiB: past 64 bits
}

TEST_CASE("Config.every_variable_is_read_in_one_place") {
  // No getenv of a FERRY_* variable anywhere but the table's own reader.
  std::regex direct(R"(getenv\s*\(\s*"FERRY_)");
  std::vector<std::string> offenders;
  for (const char* dir : {"core", "mpi", "cli", "workers"}) {
    for (const auto& e : fs::recursive_directory_iterator(source_dir / dir)) {
      auto ext = e.path().extension();
      if (ext != ".cpp" && ext != ".hpp") continue;
      if (e.path().filename() == "config.cpp") continue;
      if (std::regex_search(read_text(e.path()), direct)) offenders.push_back(e.path().string());
    }
  }
  CHECK_MESSAGE(offenders.empty(), "getenv(\"FERRY_...\") outside platform/config.cpp");
  for (const auto& o : offenders) MESSAGE(o);
}

TEST_CASE("Config.readme_lists_every_variable") {
  std::string readme = read_text(source_dir / "README.md");
  REQUIRE_FALSE(readme.empty());
  for (const auto& v : ferry::detail::config_variables()) {
    CAPTURE(v.name);
    CHECK(readme.find(std::string("`") + v.name) != std::string::npos);
  }
}

TEST_CASE("Debug.lines_show_control_characters_escaped") {
  // Debug lines carry what workers and tasks said: an escape sequence was printed as it was,
  // and a newline could forge a line of ferry's own.
  using ferry::detail::debug_line;
  CHECK(debug_line(7, "plain text, caf\xc3\xa9") == "[ferry 7] plain text, caf\xc3\xa9\n");
  CHECK(debug_line(7, "clear\x1b[2J\x7f\r") == "[ferry 7] clear\\x1b[2J\\x7f\\x0d\n");
  CHECK(debug_line(7, "one\n[ferry 1] forged") == "[ferry 7] one\n  [ferry 1] forged\n");
  CHECK(debug_line(7, std::string_view("nul\0here", 8)) == "[ferry 7] nul\\x00here\n");
  // The C1 controls (U+009B is a CSI) and bytes that are no UTF-8, as the ferry command shows
  // a worker's text (terminal_text).
  CHECK(debug_line(7, "\xc2\x9b" "2J \x9b" "2J caf\xc3\xa9") == "[ferry 7] \\xc2\\x9b2J \\x9b2J caf\xc3\xa9\n");
  // A formatted message that did not fit says so.
  char buf[8];
  const std::string longer = "0123456789", shorter = "0123";
  CHECK(ferry::detail::formatted_text(buf, sizeof buf, std::snprintf(buf, sizeof buf, "%s", longer.c_str())) == "0123...");
  CHECK(ferry::detail::formatted_text(buf, sizeof buf, std::snprintf(buf, sizeof buf, "%s", shorter.c_str())) == "0123");
  // Cut to fit, saying so, never inside an escape.
  char small[80];
  const std::size_t n = ferry::detail::debug_line_into(small, sizeof small, 7, std::string(100, '\x1b'));
  const std::string cut(small, n);
  CHECK(cut.size() <= sizeof small);
  CHECK(cut.substr(cut.size() - 4) == "...\n");
  CHECK(cut.find("\\x1b...") != std::string::npos);
}
