// SPDX-License-Identifier: BSD-3-Clause
// What a plugin makes the loader read besides itself (core/src/plugins/load_dependencies.*): the
// directories of its own DT_RUNPATH / DT_RPATH, and the libraries found there. The test plugins
// (tests/plugins/search_path.cpp) need ferry_test_plain_library; each test writes the search path
// it wants over a placeholder in a copy.
#include <elf.h>
#include <sys/auxv.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include <doctest/doctest.h>

#include "platform/containment.hpp"
#include "plugins/load_dependencies.hpp"
#include "support/fixture.hpp"

namespace fs = std::filesystem;
using ferry::detail::dependency_verdict;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char* const plain_library_name = "libferry_test_plain_library.so";

/// A private directory (0755 inside the 0700 TempDir), a sticky one open to all (as /tmp), and
/// helpers to put the plugin and the library it needs in them.
struct Place {
  support::TempDir root;
  fs::path mine = root.path / "mine";
  fs::path sticky = root.path / "sticky";
  Place() {
    fs::create_directories(mine);
    fs::create_directories(sticky);
    fs::permissions(mine, fs::perms(0755), fs::perm_options::replace);
    fs::permissions(sticky, fs::perms(01777), fs::perm_options::replace);
  }
  /// A copy of `plugin` in `dir` whose search path (RUNPATH or RPATH, as built) is `path`, and
  /// whose auxiliary filter (the auxiliary plugin's) is `auxiliary`.
  static fs::path plugin(const fs::path& dir, const std::string& path, const char* plugin = FERRY_TEST_RUNPATH_PLUGIN,
                         const std::string& name = "libsearch.so", const std::string& auxiliary = {}) {
    std::vector<std::pair<std::string, std::string>> strings = {{FERRY_TEST_SEARCH_PATH_PLACEHOLDER, path}};
    if (!auxiliary.empty()) strings.emplace_back(FERRY_TEST_AUXILIARY_PLACEHOLDER, auxiliary);
    return support::copy_with_strings(plugin, dir / name, strings);
  }
  static fs::path write(const fs::path& to, const std::string& bytes) {
    std::ofstream(to, std::ios::binary | std::ios::trunc) << bytes;
    fs::permissions(to, fs::perms(0755), fs::perm_options::replace);
    return to;
  }
  /// The library the plugin needs (or `from`, as `name`), copied into `dir`.
  static fs::path library(const fs::path& dir, fs::perms mode = fs::perms(0755), const char* from = FERRY_TEST_PLAIN_LIBRARY,
                          const std::string& name = plain_library_name) {
    fs::create_directories(dir);
    fs::path to = dir / name;
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    fs::permissions(to, mode, fs::perm_options::replace);
    return to;
  }
};

/// dependency_verdict's sentence, "" when it passes.
std::string why(const fs::path& plugin) { return dependency_verdict(plugin).why; }

}  // namespace

TEST_CASE("LoadDependencies.a_plugin_beside_its_library_in_a_private_directory_runs") {
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  Place p;
  Place::library(p.mine);
  fs::path plugin = Place::plugin(p.mine, "$ORIGIN");
  CHECK(why(plugin) == "");
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit<int>(ferry::TaskRef{.library = plugin, .name = "triple_elsewhere"}, 7).get() == 21);
  auto o = support::options(1);
  o.plugin_dirs = {p.mine};
  ferry::Executor by_name(o);
  CHECK(by_name.submit<int>("triple_elsewhere", 5).get() == 15);
}

TEST_CASE("LoadDependencies.origin_in_a_directory_others_can_add_to_is_refused") {
  // A plugin of ours in a sticky shared directory passes the check of its own path (a sticky
  // directory on the way is fine), but with RUNPATH $ORIGIN the loader looks in that directory
  // for its libraries, where anyone can put one first.
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  Place p;
  Place::library(p.sticky);
  fs::path plugin = Place::plugin(p.sticky, "$ORIGIN");
  CHECK(ferry::detail::untrusted_reason(plugin) == "");
  auto verdict = dependency_verdict(plugin);
  CHECK(verdict.at == p.sticky);
  CHECK(contains(verdict.why, "writable by group or others"));
  CHECK(contains(verdict.why, "RUNPATH element '$ORIGIN'"));
  CHECK_THROWS_WITH_AS(ferry::PluginIndex::check_safe(plugin), doctest::Contains("RUNPATH element '$ORIGIN'"),
                       ferry::PluginError);
  ferry::Executor ex(support::options(1));
  CHECK_THROWS_WITH_AS(ex.submit<int>(ferry::TaskRef{.library = plugin, .name = "triple_elsewhere"}, 7).get(),
                       doctest::Contains(p.sticky.c_str()), ferry::PluginError);
  auto o = support::options(1);
  o.allow_unsafe_plugins = true;
  ferry::Executor allowed(o);
  CHECK(allowed.submit<int>(ferry::TaskRef{.library = plugin, .name = "triple_elsewhere"}, 7).get() == 21);
}

TEST_CASE("LoadDependencies.an_index_refuses_a_plugin_whose_search_path_is_open") {
  // The plugin directory is private; the plugin's RUNPATH names a shared one.
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  Place p;
  Place::library(p.sticky);
  Place::plugin(p.mine, p.sticky.string());
  ferry::PluginIndex index({p.mine});
  CHECK_THROWS_WITH_AS(index.find("triple_elsewhere"), doctest::Contains("the loader searches it"),
                       ferry::PluginError);
  auto skipped = index.skipped();
  REQUIRE(skipped.size() == 1);
  CHECK(contains(skipped[0].reason, "refused"));
  CHECK(contains(skipped[0].reason, p.sticky.string()));
  ferry::PluginIndex allowed({p.mine}, ferry::PluginIndexOptions{.allow_unsafe = true});
  CHECK(allowed.find("triple_elsewhere").name == "triple_elsewhere");
}

TEST_CASE("LoadDependencies.an_empty_or_relative_element_is_the_current_directory_and_refused") {
  Place p;
  Place::library(p.mine);
  SUBCASE("relative") {
    fs::path plugin = Place::plugin(p.mine, "deps");
    CHECK(contains(why(plugin), "element 'deps' is deps, a relative directory"));
  }
  SUBCASE("a token glibc does not know is kept as it is") {
    fs::path plugin = Place::plugin(p.mine, "$ORIGINAL/lib");
    CHECK(contains(why(plugin), "a relative directory"));
  }
  SUBCASE("empty at the end") {
    fs::path plugin = Place::plugin(p.mine, "$ORIGIN:");
    CHECK(contains(why(plugin), "has an empty element"));
  }
  SUBCASE("empty in the middle") {
    fs::path plugin = Place::plugin(p.mine, "$ORIGIN::/usr/lib");
    CHECK(contains(why(plugin), "has an empty element"));
  }
  SUBCASE("a whole empty search path is none (glibc ignores it)") {
    fs::path plugin = Place::plugin(p.mine, "");
    CHECK(why(plugin) == "");
  }
}

TEST_CASE("LoadDependencies.a_needed_library_others_can_write_is_refused") {
  Place p;
  fs::path library = Place::library(p.mine, fs::perms(0666));
  fs::path plugin = Place::plugin(p.mine, "$ORIGIN");
  auto verdict = dependency_verdict(plugin);
  CHECK(verdict.at == library);
  CHECK(contains(verdict.why, "writable by group or others"));
  CHECK(contains(verdict.why, std::string("which needs ") + plain_library_name));
  fs::permissions(library, fs::perms(0644), fs::perm_options::replace);
  CHECK(why(plugin) == "");
}

TEST_CASE("LoadDependencies.capability_subdirectories_the_loader_tries_are_judged_too") {
  // LD_DEBUG=libs shows the loader trying glibc-hwcaps/x86-64-v3/, tls/, x86_64/... in each
  // directory of a search path before the directory itself.
  Place p;
  Place::library(p.mine);
  fs::path plugin = Place::plugin(p.mine, "$ORIGIN");
  const char* platform = reinterpret_cast<const char*>(::getauxval(AT_PLATFORM));
  REQUIRE(platform);
  for (const fs::path& sub : {fs::path("tls"), fs::path(platform), fs::path("tls") / platform, fs::path("haswell"),
                              fs::path("glibc-hwcaps") / "x86-64-v3", fs::path("tls") / "haswell" / "avx512_1" / "x86_64"}) {
    CAPTURE(sub);
    fs::create_directories(p.mine / sub);
    fs::permissions(p.mine / sub, fs::perms(0777), fs::perm_options::replace);
    auto verdict = dependency_verdict(plugin);
    CHECK(verdict.at == p.mine / sub);
    CHECK(contains(verdict.why, "the loader searches it"));
    fs::permissions(p.mine / sub, fs::perms(0755), fs::perm_options::replace);
    CHECK(why(plugin) == "");
  }
  // A library found in one is judged (and followed) as one found in the directory itself.
  fs::path in_tls = Place::library(p.mine / "tls", fs::perms(0666));
  CHECK(dependency_verdict(plugin).at == in_tls);
  fs::remove(in_tls);
  // A link there whose target is missing: another user could make the target appear.
  fs::remove_all(p.mine / "tls");
  fs::create_directory_symlink(p.sticky / "later", p.mine / "tls");
  CHECK(dependency_verdict(plugin).at == p.mine / "tls");
}

TEST_CASE("LoadDependencies.lib_and_platform_tokens_are_expanded") {
  Place p;
  Place::library(p.mine);
  SUBCASE("$LIB: each directory glibc may give it") {
    fs::path plugin = Place::plugin(p.mine, "$ORIGIN/$LIB");
    CHECK(why(plugin) == "");  // missing, in a directory nobody else can add to
    for (const char* lib : {"lib64", "lib/x86_64-linux-gnu", "lib"}) {
      CAPTURE(lib);
      fs::create_directories(p.mine / lib);
      fs::permissions(p.mine / lib, fs::perms(0777), fs::perm_options::replace);
      CHECK(contains(why(plugin), (p.mine / lib).string() + " is writable by group or others"));
      fs::remove_all(p.mine / "lib");
      fs::remove_all(p.mine / "lib64");
    }
    CHECK(why(plugin) == "");
  }
  SUBCASE("${PLATFORM}, braced") {
    const char* platform = reinterpret_cast<const char*>(::getauxval(AT_PLATFORM));
    REQUIRE(platform);
    fs::path plugin = Place::plugin(p.mine, "${ORIGIN}/deps/${PLATFORM}");
    fs::create_directories(p.mine / "deps" / platform);
    fs::permissions(p.mine / "deps" / platform, fs::perms(0777), fs::perm_options::replace);
    CHECK(dependency_verdict(plugin).at == p.mine / "deps" / platform);
  }
}

TEST_CASE("LoadDependencies.a_missing_directory_passes_only_where_nobody_else_could_create_it") {
  Place p;
  Place::library(p.mine);
  CHECK(why(Place::plugin(p.mine, (p.mine / "later").string())) == "");
  CHECK(contains(why(Place::plugin(p.mine, (p.sticky / "later").string())), "another user could create it"));
}

TEST_CASE("LoadDependencies.rpath_is_judged_as_runpath") {
  Place p;
  Place::library(p.sticky);
  fs::path plugin = Place::plugin(p.sticky, "$ORIGIN", FERRY_TEST_RPATH_PLUGIN);
  auto verdict = dependency_verdict(plugin);
  CHECK(verdict.at == p.sticky);
  CHECK(contains(verdict.why, "RPATH element '$ORIGIN'"));
  fs::path safe = Place::plugin(p.mine, "$ORIGIN", FERRY_TEST_RPATH_PLUGIN);
  Place::library(p.mine);
  CHECK(why(safe) == "");
}

TEST_CASE("LoadDependencies.an_element_that_expands_to_too_many_directories_is_refused") {
  Place p;
  // Three values of $PLATFORM on x86-64 (AT_PLATFORM, haswell, xeon_phi): 3^6 = 729 directories.
  CHECK(contains(why(Place::plugin(p.mine, "/opt/$PLATFORM$PLATFORM$PLATFORM$PLATFORM$PLATFORM$PLATFORM")),
                 "expands to more directories than ferry judges"));
}

TEST_CASE("LoadDependencies.a_plugin_path_the_loader_would_expand_is_refused") {
  // dlopen expands $LIB, $PLATFORM and $ORIGIN in the name it is given: the path checked would
  // not be the file loaded.
  Place p;
  fs::create_directories(p.mine / "$LIB");
  fs::path plugin = Place::plugin(p.mine / "$LIB", "");
  CHECK(contains(why(plugin), "which the loader expands"));
  CHECK_THROWS_WITH_AS(ferry::PluginIndex::check_safe(plugin), doctest::Contains("which the loader expands"),
                       ferry::PluginError);
  fs::create_directories(p.mine / "$NOTATOKEN");
  CHECK(why(Place::plugin(p.mine / "$NOTATOKEN", "")) == "");
}

TEST_CASE("LoadDependencies.filter_libraries_are_judged_as_needed_ones") {
  // glibc loads a DT_AUXILIARY (or DT_FILTER) library with the plugin when it is there, found
  // as a needed one is.
  Place p;
  Place::library(p.mine);
  SUBCASE("named by a path where others can create it") {
    fs::path plugin = Place::plugin(p.mine, "$ORIGIN", FERRY_TEST_AUXILIARY_PLUGIN, "libsearch.so",
                                    (p.sticky / "libaux.so").string());
    CHECK(contains(why(plugin), "another user could create it"));
  }
  SUBCASE("named by a path in a private directory") {
    fs::path plugin = Place::plugin(p.mine, "$ORIGIN", FERRY_TEST_AUXILIARY_PLUGIN, "libsearch.so",
                                    (p.mine / "libaux.so").string());
    CHECK(why(plugin) == "");
    fs::path aux = Place::library(p.mine, fs::perms(0666), FERRY_TEST_PLAIN_LIBRARY, "libaux.so");
    CHECK(dependency_verdict(plugin).at == aux);
  }
  SUBCASE("named by its soname, found through the search path") {
    fs::path plugin = Place::plugin(p.mine, "$ORIGIN", FERRY_TEST_AUXILIARY_PLUGIN, "libsearch.so", "libaux.so");
    CHECK(why(plugin) == "");
    fs::path aux = Place::library(p.mine, fs::perms(0666), FERRY_TEST_PLAIN_LIBRARY, "libaux.so");
    CHECK(dependency_verdict(plugin).at == aux);
  }
}

TEST_CASE("LoadDependencies.rpath_is_passed_on_to_the_libraries_it_finds") {
  // Without a RUNPATH of its own, a library's needed libraries are also searched for in the
  // DT_RPATH of the library that needed it: the plugin's RPATH finds the chain library, whose
  // own need (the plain library) is found through that RPATH too.
  Place p;
  fs::path plugin = Place::plugin(p.mine, "$ORIGIN", FERRY_TEST_RPATH_CHAIN_PLUGIN);
  Place::library(p.mine, fs::perms(0755), FERRY_TEST_CHAIN_LIBRARY, "libferry_test_chain_library.so");
  fs::path plain = Place::library(p.mine, fs::perms(0755));
  CHECK(why(plugin) == "");
  ferry::Executor ex(support::options(1));
  CHECK(ex.submit<int>(ferry::TaskRef{.library = plugin, .name = "triple_twice_removed"}, 4).get() == 12);
  fs::permissions(plain, fs::perms(0666), fs::perm_options::replace);
  auto verdict = dependency_verdict(plugin);
  CHECK(verdict.at == plain);
  CHECK(contains(verdict.why, "the loader may load it for " + (p.mine / "libferry_test_chain_library.so").string()));
}

namespace {

/// `bytes` of a shared library with `change` applied to its program headers and dynamic entries.
std::string patched(std::string bytes, const std::function<void(std::vector<Elf64_Phdr>&, Elf64_Dyn*, std::size_t)>& change) {
  Elf64_Ehdr eh;
  std::memcpy(&eh, bytes.data(), sizeof eh);
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  std::memcpy(ph.data(), bytes.data() + eh.e_phoff, ph.size() * sizeof(Elf64_Phdr));
  auto dynamic = std::find_if(ph.begin(), ph.end(), [](const Elf64_Phdr& p) { return p.p_type == PT_DYNAMIC; });
  REQUIRE(dynamic != ph.end());
  auto* dyn = reinterpret_cast<Elf64_Dyn*>(bytes.data() + dynamic->p_offset);
  change(ph, dyn, dynamic->p_filesz / sizeof(Elf64_Dyn));
  std::memcpy(bytes.data() + eh.e_phoff, ph.data(), ph.size() * sizeof(Elf64_Phdr));
  return bytes;
}

std::string file_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("LoadDependencies.the_dynamic_segment_is_read_as_the_loader_reads_it") {
  // Each change leaves the file one the loader loads as before (it finds the same RUNPATH), and
  // ferry must find it too: a reader that gave up on it, or read something else, let the plugin
  // through (a review's reproductions, each loaded a planted library).
  Place p;
  Place::library(p.sticky);
  const std::string original = file_bytes(Place::plugin(p.sticky, "$ORIGIN"));
  SUBCASE("DT_STRSZ far too large: the loader never uses it") {
    Place::write(p.sticky / "libsearch.so", patched(original, [](auto&, Elf64_Dyn* dyn, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i)
        if (dyn[i].d_tag == DT_STRSZ) dyn[i].d_un.d_val = std::uint64_t{1} << 40;
    }));
  }
  SUBCASE("PT_DYNAMIC's file size too small: the loader reads up to DT_NULL") {
    Place::write(p.sticky / "libsearch.so", patched(original, [](std::vector<Elf64_Phdr>& ph, Elf64_Dyn*, std::size_t) {
      for (auto& h : ph)
        if (h.p_type == PT_DYNAMIC) h.p_filesz = 8;
    }));
  }
  SUBCASE("an empty PT_DYNAMIC before the real one: the loader skips it") {
    Place::write(p.sticky / "libsearch.so", patched(original, [](std::vector<Elf64_Phdr>& ph, Elf64_Dyn*, std::size_t) {
      // The PT_GNU_STACK header becomes an empty PT_DYNAMIC placed first.
      auto stack = std::find_if(ph.begin(), ph.end(), [](const Elf64_Phdr& h) { return h.p_type == PT_GNU_STACK; });
      REQUIRE(stack != ph.end());
      stack->p_type = PT_DYNAMIC;
      stack->p_filesz = 0;
      std::rotate(ph.begin(), stack, stack + 1);
    }));
  }
  SUBCASE("no section headers: the loader never reads them") {
    std::string bytes = original;
    Elf64_Ehdr eh;
    std::memcpy(&eh, bytes.data(), sizeof eh);
    eh.e_shoff = std::uint64_t{1} << 40;
    std::memcpy(bytes.data(), &eh, sizeof eh);
    Place::write(p.sticky / "libsearch.so", bytes);
  }
  auto verdict = dependency_verdict(p.sticky / "libsearch.so");
  CHECK(verdict.at == p.sticky);
  CHECK(contains(verdict.why, "RUNPATH element '$ORIGIN'"));
}

TEST_CASE("LoadDependencies.a_file_the_loader_may_load_but_ferry_cannot_read_is_refused") {
  Place p;
  std::string bytes = file_bytes(Place::plugin(p.mine, "$ORIGIN"));
  // Every DT_NEEDED names a string that runs off the end of the file's bytes.
  Place::write(p.mine / "libsearch.so", patched(bytes, [&](auto&, Elf64_Dyn* dyn, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      if (dyn[i].d_tag == DT_STRTAB) dyn[i].d_un.d_ptr = std::uint64_t{1} << 40;
  }));
  CHECK(contains(why(p.mine / "libsearch.so"), "cannot be read as the loader reads it"));
}

namespace {

/// Whether a sandbox can be made here (Sandbox.* say why not).
bool sandbox_runs_here() {
  return ferry::detail::containment_missing(ferry::detail::containment_support(), true, false, false).empty();
}

ferry::TaskRef hostile_task(const char* name) { return ferry::TaskRef{.library = FERRY_TEST_HOSTILE_PLUGIN, .name = name}; }

}  // namespace

TEST_CASE("LoadDependencies.a_sandboxed_worker_refuses_a_search_path_a_task_can_write") {
  // The host judges a plugin's RUNPATH on its own file system, where a directory of ours under
  // /var/tmp passes. A sandboxed worker's loader searches the worker's mount namespace, where
  // /var/tmp (as /tmp and /dev/shm) is the sandbox's private directory, which every call writes:
  // one call left the library the plugin needs at that element, and with max_tasks_per_child 1
  // the next worker's plugin loaded it (an audit: code of one call ran in another worker).
  if (!sandbox_runs_here()) return;
  support::ScopedEnv strict("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
  support::TempDir root(FERRY_TEST_BINARY_DIR), var_tmp("/var/tmp");
  const fs::path mine = root.path / "mine", element = var_tmp.path / "lib";
  for (const fs::path& dir : {mine, element}) {
    fs::create_directories(dir);
    fs::permissions(dir, fs::perms(0755), fs::perm_options::replace);
  }
  Place::library(mine);
  const fs::path plugin = Place::plugin(mine, element.string() + ":$ORIGIN");
  const ferry::TaskRef triple{.library = plugin, .name = "triple_elsewhere"};
  CHECK(why(plugin) == "");
  auto o = support::options(1);
  o.max_tasks_per_child = 1;
  o.plugin_dirs.push_back(mine);
  o.sandbox.enabled = true;
  SUBCASE("an element in the private directory, where one call left the library") {
    ferry::Executor ex(o);
    // One call makes the element in the private directory and leaves the library there.
    std::ifstream in(FERRY_TEST_PLAIN_LIBRARY, std::ios::binary);
    const std::string library((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(ex.submit<int>(hostile_task("make_directory"), var_tmp.path.string()).get() == 0);
    CHECK(ex.submit<int>(hostile_task("make_directory"), element.string()).get() == 0);
    CHECK(ex.submit<bool>(hostile_task("write_file"), (element / plain_library_name).string(), library).get());
    // The next worker refuses the plugin, naming the element, rather than load what was left.
    CHECK_THROWS_WITH_AS(ex.submit<int>(triple, 7).get(),
                         doctest::Contains(("RUNPATH element '" + element.string() + "'").c_str()), ferry::PluginError);
    CHECK_THROWS_WITH_AS(ex.submit<int>(triple, 7).get(), doctest::Contains("where a task of this sandbox can write"),
                         ferry::PluginError);
    // A search path that leads nowhere a task writes loads as before.
    const fs::path beside = Place::plugin(mine, "$ORIGIN", FERRY_TEST_RUNPATH_PLUGIN, "libbeside.so");
    CHECK(ex.submit<int>(ferry::TaskRef{.library = beside, .name = "triple_elsewhere"}, 5).get() == 15);
  }
  SUBCASE("a capability subdirectory that links there is refused too") {
    const fs::path linked = root.path / "linked";
    fs::create_directories(linked);
    fs::permissions(linked, fs::perms(0755), fs::perm_options::replace);
    fs::create_directory_symlink(element, linked / "x86_64");
    const fs::path via_link = Place::plugin(mine, linked.string() + ":$ORIGIN", FERRY_TEST_RUNPATH_PLUGIN, "liblinked.so");
    CHECK(why(via_link) == "");
    ferry::Executor ex(o);
    CHECK_THROWS_WITH_AS(ex.submit<int>(ferry::TaskRef{.library = via_link, .name = "triple_elsewhere"}, 7).get(),
                         doctest::Contains(((linked / "x86_64").string() + " lies in /var/tmp").c_str()), ferry::PluginError);
  }
  SUBCASE("so is a Sandbox::write path, and one where the loader looks inside an element") {
    support::TempDir written(FERRY_TEST_BINARY_DIR);
    const fs::path holding = root.path / "holding", beside = root.path / "beside";
    fs::create_directories(holding / "glibc-hwcaps" / "x86-64-v3");
    fs::create_directories(beside / "out");
    fs::permissions(holding, fs::perms(0755), fs::perm_options::replace);
    fs::permissions(beside, fs::perms(0755), fs::perm_options::replace);
    o.sandbox.write = {written.path, holding / "glibc-hwcaps" / "x86-64-v3", beside / "out"};
    ferry::Executor ex(o);
    const fs::path into_write = Place::plugin(mine, written.path.string() + ":$ORIGIN", FERRY_TEST_RUNPATH_PLUGIN, "libwrite.so");
    CHECK_THROWS_WITH_AS(ex.submit<int>(ferry::TaskRef{.library = into_write, .name = "triple_elsewhere"}, 7).get(),
                         doctest::Contains(("RUNPATH element '" + written.path.string() + "'").c_str()), ferry::PluginError);
    const fs::path into_holding = Place::plugin(mine, holding.string() + ":$ORIGIN", FERRY_TEST_RUNPATH_PLUGIN, "libholding.so");
    CHECK_THROWS_WITH_AS(ex.submit<int>(ferry::TaskRef{.library = into_holding, .name = "triple_elsewhere"}, 7).get(),
                         doctest::Contains((holding / "glibc-hwcaps" / "x86-64-v3").string().c_str()), ferry::PluginError);
    // A write path inside an element where the loader never looks (`out`) refuses nothing: it
    // refused every $ORIGIN plugin of a directory holding one (a review).
    const fs::path into_beside = Place::plugin(mine, beside.string() + ":$ORIGIN", FERRY_TEST_RUNPATH_PLUGIN, "libbeside2.so");
    CHECK(ex.submit<int>(ferry::TaskRef{.library = into_beside, .name = "triple_elsewhere"}, 7).get() == 21);
  }
  // Without a sandbox no task writes there: the plugin loads (the library beside it).
  ferry::Executor unsandboxed(support::options(1));
  CHECK(unsandboxed.submit<int>(triple, 7).get() == 21);
}
