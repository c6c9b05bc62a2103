// SPDX-License-Identifier: BSD-3-Clause
// cpu_count: hardware threads, FERRY_MAX_CPU_COUNT and cgroup v1/v2 quotas read from fake trees.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <ferry/system.hpp>

#include "support/fixture.hpp"

namespace {

namespace fs = std::filesystem;

/// A fake cgroup root and /proc/self/cgroup inside a private temp dir.
struct FakeCgroup {
  support::TempDir tmp;
  fs::path root = tmp.path / "sys-fs-cgroup";
  fs::path self = tmp.path / "proc-self-cgroup";

  FakeCgroup() { fs::create_directories(root); }

  void write(const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream out(file);
    out << text;
    REQUIRE(out.good());
  }
  /// cpu.max of the cgroup at `rel` ("" for the root).
  void cpu_max(const fs::path& rel, const std::string& text) { write(root / rel / "cpu.max", text); }
  void cgroup(const std::string& text) { write(self, text); }
  void v1(const std::string& mount, const fs::path& rel, const std::string& quota,
          const std::string& period) {
    write(root / mount / rel / "cpu.cfs_quota_us", quota);
    write(root / mount / rel / "cpu.cfs_period_us", period);
  }
  unsigned limit() const { return ferry::detail::cgroup_cpu_limit(root, self); }
};

}  // namespace

TEST_CASE("System.cpu_count.is_within_hardware_threads") {
  unsigned n = ferry::cpu_count();
  CHECK(n >= 1);
  unsigned hw = std::thread::hardware_concurrency();
  if (hw > 0) CHECK(n <= hw);
  CHECK(ferry::cpu_count() == n);  // stable between calls
}

TEST_CASE("System.cpu_count.honours_FERRY_MAX_CPU_COUNT") {
  const unsigned unlimited = ferry::cpu_count();
  SUBCASE("1") {
    support::ScopedEnv env("FERRY_MAX_CPU_COUNT", "1");
    CHECK(ferry::cpu_count() == 1);
  }
  SUBCASE("larger than the machine changes nothing") {
    support::ScopedEnv env("FERRY_MAX_CPU_COUNT", "100000");
    CHECK(ferry::cpu_count() == unlimited);
  }
  SUBCASE("invalid values are ignored") {
    for (std::string v : {"0", "-2", "abc", "2x", ""}) {
      CAPTURE(v);
      support::ScopedEnv env("FERRY_MAX_CPU_COUNT", v);
      CHECK(ferry::cpu_count() == unlimited);
    }
  }
}

TEST_CASE("System.cgroup_cpu_limit.v2_max_is_no_limit") {
  FakeCgroup cg;
  cg.cgroup("0::/\n");
  cg.cpu_max("", "max 100000\n");
  CHECK(cg.limit() == 0);
}

TEST_CASE("System.cgroup_cpu_limit.v2_quota_rounds_up") {
  FakeCgroup cg;
  cg.cgroup("0::/\n");
  SUBCASE("1.5 CPUs") {
    cg.cpu_max("", "150000 100000\n");
    CHECK(cg.limit() == 2);
  }
  SUBCASE("exactly 3 CPUs") {
    cg.cpu_max("", "300000 100000\n");
    CHECK(cg.limit() == 3);
  }
  SUBCASE("a sliver of a CPU is 1") {
    cg.cpu_max("", "1000 100000\n");
    CHECK(cg.limit() == 1);
  }
  SUBCASE("other period") {
    cg.cpu_max("", "250000 50000");
    CHECK(cg.limit() == 5);
  }
}

TEST_CASE("System.cgroup_cpu_limit.v2_nested_takes_the_smallest_ancestor") {
  FakeCgroup cg;
  cg.cgroup("0::/outer/middle/inner\n");
  SUBCASE("parent smaller") {
    cg.cpu_max("outer", "max 100000\n");
    cg.cpu_max("outer/middle", "200000 100000\n");
    cg.cpu_max("outer/middle/inner", "400000 100000\n");
    CHECK(cg.limit() == 2);
  }
  SUBCASE("leaf smaller") {
    cg.cpu_max("outer", "800000 100000\n");
    cg.cpu_max("outer/middle/inner", "50000 100000\n");
    CHECK(cg.limit() == 1);
  }
  SUBCASE("only the root has one") {
    cg.cpu_max("", "300000 100000\n");
    CHECK(cg.limit() == 3);
  }
  SUBCASE("a sibling's limit does not apply") {
    cg.cpu_max("outer/other", "100000 100000\n");
    cg.cpu_max("outer/middle/inner", "600000 100000\n");
    CHECK(cg.limit() == 6);
  }
}

TEST_CASE("System.cgroup_cpu_limit.v2_malformed_is_no_limit") {
  FakeCgroup cg;
  cg.cgroup("0::/x\n");
  const char* text = "";
  SUBCASE("empty") { text = ""; }
  SUBCASE("quota only") { text = "150000\n"; }
  SUBCASE("words") { text = "lots of cpus\n"; }
  SUBCASE("zero period") { text = "150000 0\n"; }
  SUBCASE("negative quota") { text = "-5 100000\n"; }
  SUBCASE("garbage quota") { text = "15x0000 100000\n"; }
  const std::string content = text;
  CAPTURE(content);
  cg.cpu_max("x", content);
  CHECK(cg.limit() == 0);
}

TEST_CASE("System.cgroup_cpu_limit.missing_files_are_no_limit") {
  FakeCgroup cg;
  SUBCASE("no /proc/self/cgroup") {}
  SUBCASE("no cpu.max anywhere") { cg.cgroup("0::/a/b\n"); }
  SUBCASE("malformed lines") { cg.cgroup("nonsense\n:\n\n"); }
  CHECK(cg.limit() == 0);
}

TEST_CASE("System.cgroup_cpu_limit.v1_quota_rounds_up") {
  FakeCgroup cg;
  cg.cgroup("12:memory:/x\n4:cpu,cpuacct:/x\n1:name=systemd:/x\n");
  SUBCASE("2.5 CPUs") {
    cg.v1("cpu,cpuacct", "x", "250000\n", "100000\n");
    CHECK(cg.limit() == 3);
  }
  SUBCASE("exactly 2") {
    cg.v1("cpu,cpuacct", "x", "200000", "100000");
    CHECK(cg.limit() == 2);
  }
  SUBCASE("quota -1 is no limit") {
    cg.v1("cpu,cpuacct", "x", "-1\n", "100000\n");
    CHECK(cg.limit() == 0);
  }
  SUBCASE("mounted as cpu") {
    cg.v1("cpu", "x", "50000", "100000");
    CHECK(cg.limit() == 1);
  }
  SUBCASE("the hierarchy root when the path is not visible (containers)") {
    cg.v1("cpu,cpuacct", "", "400000", "100000");
    CHECK(cg.limit() == 4);
  }
}

TEST_CASE("System.cgroup_cpu_limit.v1_and_v2_together_take_the_smaller") {
  FakeCgroup cg;
  cg.cgroup("4:cpu,cpuacct:/job\n0::/job\n");
  cg.v1("cpu,cpuacct", "job", "300000", "100000");
  cg.cpu_max("job", "700000 100000\n");
  CHECK(cg.limit() == 3);
}
