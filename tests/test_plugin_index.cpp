// SPDX-License-Identifier: BSD-3-Clause
// PluginIndex: manifests read from plugin files, hostile ELF bytes, directory scans and safety.
#include <doctest/doctest.h>

#include <elf.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <ferry/detail/type_name.hpp>
#include <ferry/errors.hpp>
#include <ferry/plugin_index.hpp>
#include <ferry/task.hpp>

#include "plugins/elf_reader.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"

namespace {

namespace fs = std::filesystem;
using ferry::PluginError;
using ferry::PluginIndex;
using ferry::PluginIndexOptions;
using ferry::TaskInfo;

const fs::path math_plugin = FERRY_TEST_MATH_PLUGIN;
const fs::path seed_plugin = FERRY_TEST_SEED_PLUGIN;
const fs::path plain_library = FERRY_TEST_PLAIN_LIBRARY;

std::vector<unsigned char> read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& file, const void* data, std::size_t size, fs::perms mode) {
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    REQUIRE(out.good());
  }
  fs::permissions(file, mode);
}

void write_text(const fs::path& file, const std::string& text) {
  write_bytes(file, text.data(), text.size(), fs::perms(0644));
}

/// Copies a plugin into a test directory with safe permissions (0755, as a build would).
fs::path install(const fs::path& src, const fs::path& dir, const std::string& name) {
  fs::path dst = dir / name;
  fs::copy_file(src, dst, fs::copy_options::overwrite_existing);
  fs::permissions(dst, fs::perms(0755));
  return dst;
}

const TaskInfo* by_name(const std::vector<TaskInfo>& tasks, const std::string& name) {
  auto it = std::find_if(tasks.begin(), tasks.end(), [&](const TaskInfo& t) { return t.name == name; });
  return it == tasks.end() ? nullptr : &*it;
}

/// The message of the PluginError `f` throws; fails the test when it throws nothing or another type.
template <class F>
std::string plugin_error(F&& f) {
  try {
    f();
  } catch (const PluginError& e) {
    return e.what();
  }
  FAIL("no PluginError was thrown");
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

struct ScopedUnsetEnv {
  std::string name;
  std::optional<std::string> old;
  explicit ScopedUnsetEnv(std::string n) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    ::unsetenv(name.c_str());
  }
  ~ScopedUnsetEnv() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
  }
};

}  // namespace

// ---- manifests -------------------------------------------------------------------------------

TEST_CASE("PluginIndex.read_manifest.lists_the_math_tasks") {
  auto tasks = PluginIndex::read_manifest(math_plugin);
  const fs::path canonical = fs::canonical(math_plugin);
  for (const auto& t : tasks) {
    CAPTURE(t.name);
    CHECK(t.plugin == "math");
    CHECK(t.library.is_absolute());
    CHECK(t.library == canonical);
    CHECK(t.abi == ferry::detail::plugin_abi_version);
    CHECK(t.fingerprint == ferry::detail::fnv1a(t.signature));
    CHECK(std::count_if(tasks.begin(), tasks.end(), [&](const TaskInfo& o) { return o.name == t.name; }) == 1);
  }
  const TaskInfo* square = by_name(tasks, "square");
  REQUIRE(square);
  CHECK(square->signature == "i32(i32)");
  CHECK(square->fingerprint == ferry::detail::Signature<int, int>::fingerprint);
  const TaskInfo* dotted = by_name(tasks, "math.square");
  REQUIRE(dotted);
  CHECK(dotted->signature == "i32(i32)");
  const TaskInfo* add = by_name(tasks, "add");
  REQUIRE(add);
  CHECK(add->signature == "i32(i32,i32)");
  const TaskInfo* sum = by_name(tasks, "sum");
  REQUIRE(sum);
  CHECK(sum->signature == "f64(vector<f64>)");
  CHECK(sum->fingerprint == ferry::detail::Signature<double, const std::vector<double>&>::fingerprint);
  const TaskInfo* scale = by_name(tasks, "scale");
  REQUIRE(scale);
  CHECK(scale->signature == "math::Vec2(math::Vec2,f64)");
}

TEST_CASE("PluginIndex.read_manifest.relative_path_gives_absolute_library") {
  fs::path rel = fs::relative(math_plugin);
  REQUIRE(rel.is_relative());
  auto tasks = PluginIndex::read_manifest(rel);
  REQUIRE_FALSE(tasks.empty());
  CHECK(tasks.front().library == fs::canonical(math_plugin));
}

TEST_CASE("PluginIndex.read_manifest.missing_file") {
  support::TempDir dir;
  const fs::path missing = dir.path / "libnothing.so";
  try {
    PluginIndex::read_manifest(missing);
    FAIL("no PluginError");
  } catch (const PluginError& e) {
    CHECK(contains(e.what(), missing.string()));
    CHECK(contains(e.what(), "does not exist"));
    CHECK(e.path() == missing.string());
  }
}

TEST_CASE("PluginIndex.read_manifest.text_file_is_not_a_shared_library") {
  support::TempDir dir;
  fs::path file;
  SUBCASE("text") {
    file = dir.path / "libtext.so";
    write_text(file, "this is just text, not an ELF file\n");
  }
  SUBCASE("empty") {
    file = dir.path / "libempty.so";
    write_text(file, "");
  }
  SUBCASE("a directory") {
    file = dir.path / "libdir.so";
    fs::create_directory(file);
  }
  std::string msg = plugin_error([&] { PluginIndex::read_manifest(file); });
  CHECK(contains(msg, "not a shared library"));
  CHECK(contains(msg, file.string()));
}

TEST_CASE("PluginIndex.read_task_records.a_fifo_or_another_users_file_is_read_safely") {
  support::TempDir dir;
  SUBCASE("a FIFO under a plugin's name is refused at once, not waited on") {
    // Swapped in after the directory scan saw a regular file: opening it must not block.
    fs::path fifo = dir.path / "libfifo.so";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // Nor opened at all (as a device, whose driver an open runs): a writer waiting for a reader
    // of the FIFO is not let through.
    std::atomic<bool> writer_through{false};
    std::atomic<pid_t> writer_tid{0};
    std::thread writer([&] {
      writer_tid = static_cast<pid_t>(::syscall(SYS_gettid));
      int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);  // waits for a reader
      writer_through = true;
      if (fd >= 0) ::close(fd);
    });
    // The writer waits in its open (openat, 257 on x86-64) before the read is tried.
    REQUIRE(support::wait_until([&] {
      return writer_tid != 0 && support::read_file("/proc/self/task/" + std::to_string(writer_tid.load()) +
                                                   "/syscall").rfind(std::to_string(SYS_openat) + " ", 0) == 0;
    }));
    try {
      ferry::detail::read_task_records(fifo);
      FAIL("read a FIFO");
    } catch (const ferry::detail::ElfError& e) {
      CHECK(contains(e.what(), "not a regular file"));
    }
    CHECK_FALSE(support::wait_until([&] { return writer_through.load(); }, std::chrono::milliseconds(300)));
    int reader = ::open(fifo.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // lets the writer go
    writer.join();
    if (reader >= 0) ::close(reader);
  }
  SUBCASE("a plugin another user can change reads the same") {
    // Only root can give a file away.
    if (::geteuid() != 0) {
      MESSAGE("skipped: needs root to give a file away");
      return;
    }
    fs::path mine = dir.path / "libmine.so";
    fs::path theirs = dir.path / "libtheirs.so";
    fs::copy_file(FERRY_TEST_MATH_PLUGIN, mine);
    fs::copy_file(FERRY_TEST_MATH_PLUGIN, theirs);
    REQUIRE(::chown(theirs.c_str(), 65534, 65534) == 0);
    auto a = ferry::detail::read_task_records(mine);
    auto b = ferry::detail::read_task_records(theirs);
    REQUIRE(a.size() == b.size());
    CHECK(!a.empty());
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].name == b[i].name);
      CHECK(a[i].fingerprint == b[i].fingerprint);
    }
  }
}

TEST_CASE("PluginIndex.read_task_records.a_plugin_truncated_while_it_is_read_is_an_error") {
  // `cp` over a plugin a host is scanning truncates it in place: a reader that mapped the file
  // got SIGBUS past the new end (seen once in 3,833 `ferry list` runs beside a copy loop). Here
  // the file shrinks between its size being taken and its reading, every time.
  support::TempDir dir;
  fs::path file = dir.path / "libshrinking.so";
  fs::copy_file(FERRY_TEST_MATH_PLUGIN, file);
  const auto full = static_cast<std::size_t>(fs::file_size(file));
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::truncate(file.c_str(), static_cast<off_t>(full / 2)) == 0);
  try {
    ferry::detail::read_task_records(fd, full);
    FAIL("read a truncated file whole");
  } catch (const ferry::detail::ElfError& e) {
    CHECK(e.kind() == ferry::detail::ElfError::Kind::truncated);
  }
  ::close(fd);
}

TEST_CASE("PluginIndex.read_manifest.a_plugin_for_another_machine_says_so") {
  support::TempDir dir;
  auto bytes = read_bytes(math_plugin);
  std::string expected;
  SUBCASE("aarch64") {
    const std::uint16_t aarch64 = 183;  // EM_AARCH64
    std::memcpy(bytes.data() + offsetof(Elf64_Ehdr, e_machine), &aarch64, 2);
    expected = "aarch64";
  }
  SUBCASE("32-bit") {
    bytes[EI_CLASS] = ELFCLASS32;
    expected = "32-bit";
  }
  SUBCASE("big-endian") {
    bytes[EI_DATA] = ELFDATA2MSB;
    expected = "big-endian";
  }
  fs::path file = dir.path / "libforeign.so";
  write_bytes(file, bytes.data(), bytes.size(), fs::perms(0755));
  std::string msg = plugin_error([&] { PluginIndex::read_manifest(file); });
  CHECK(contains(msg, "built for another machine"));
  CHECK(contains(msg, expected));
  // And the index skips it with that reason (`ferry list` prints it), instead of listing it.
  PluginIndex index({dir.path});
  CHECK(index.tasks().empty());
  REQUIRE(index.skipped().size() == 1);
  CHECK(contains(index.skipped()[0].reason, expected));
}

TEST_CASE("PluginIndex.read_manifest.plain_library_is_not_a_ferry_plugin") {
  std::string msg = plugin_error([&] { PluginIndex::read_manifest(plain_library); });
  CHECK(contains(msg, "not a ferry plugin"));
  CHECK(contains(msg, plain_library.string()));
}

TEST_CASE("PluginIndex.read_manifest.truncated_plugin_is_refused") {
  support::TempDir dir;
  const auto bytes = read_bytes(math_plugin);
  REQUIRE(bytes.size() > 2000);
  std::size_t size = 0;
  SUBCASE("first 1000 bytes") { size = 1000; }
  SUBCASE("first half") { size = bytes.size() / 2; }
  SUBCASE("all but the last byte") { size = bytes.size() - 1; }
  SUBCASE("just the ELF header") { size = sizeof(Elf64_Ehdr); }
  SUBCASE("less than an ELF header") { size = 20; }
  CAPTURE(size);
  fs::path file = dir.path / "libtruncated.so";
  write_bytes(file, bytes.data(), size, fs::perms(0755));
  std::string msg = plugin_error([&] { PluginIndex::read_manifest(file); });
  CHECK(contains(msg, file.string()));
}

// ---- hostile bytes ---------------------------------------------------------------------------

namespace {

/// Byte ranges of the parts of an ELF file the reader looks at.
std::vector<std::pair<std::size_t, std::size_t>> interesting_ranges(const std::vector<unsigned char>& b) {
  std::vector<std::pair<std::size_t, std::size_t>> out{{0, sizeof(Elf64_Ehdr)}};
  Elf64_Ehdr eh;
  std::memcpy(&eh, b.data(), sizeof eh);
  REQUIRE(eh.e_shentsize == sizeof(Elf64_Shdr));
  REQUIRE(eh.e_shoff + std::size_t{eh.e_shnum} * sizeof(Elf64_Shdr) <= b.size());
  out.emplace_back(eh.e_shoff, std::size_t{eh.e_shnum} * sizeof(Elf64_Shdr));
  Elf64_Shdr names;
  std::memcpy(&names, b.data() + eh.e_shoff + eh.e_shstrndx * sizeof(Elf64_Shdr), sizeof names);
  for (unsigned i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, b.data() + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof sh);
    const char* name = reinterpret_cast<const char*>(b.data() + names.sh_offset + sh.sh_name);
    bool wanted = sh.sh_type == SHT_DYNSYM || std::strcmp(name, ".dynstr") == 0 ||
                  std::strcmp(name, "ferry_tasks") == 0 || i == eh.e_shstrndx;
    if (wanted && sh.sh_type != SHT_NOBITS && sh.sh_size > 0) out.emplace_back(sh.sh_offset, sh.sh_size);
  }
  REQUIRE(out.size() >= 5);  // header, section headers, .dynsym, .dynstr, ferry_tasks, names
  return out;
}

struct ParseOutcome {
  bool threw = false;
  std::size_t records = 0;
  std::size_t problems = 0;
};

/// parse_task_records on an exact-size heap copy (so a sanitizer sees any overrun).
ParseOutcome parse(const std::vector<unsigned char>& bytes) {
  auto copy = std::make_unique<unsigned char[]>(std::max<std::size_t>(bytes.size(), 1));
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  ParseOutcome o;
  try {
    auto records = ferry::detail::parse_task_records(copy.get(), bytes.size());
    o.records = records.size();
    for (const auto& r : records) {
      if (!r.problem.empty()) ++o.problems;
      CHECK(r.symbol.rfind("ferry_task:", 0) == 0);
    }
  } catch (const ferry::detail::ElfError&) {
    o.threw = true;
  }
  return o;
}

}  // namespace

TEST_CASE("PluginIndex.parse_task_records.random_bytes_never_crash") {
  std::mt19937_64 rng(0xFE77);
  std::size_t threw = 0;
  for (int i = 0; i < 300; ++i) {
    CAPTURE(i);
    std::vector<unsigned char> bytes(rng() % 4096);
    for (auto& b : bytes) b = static_cast<unsigned char>(rng());
    if (i % 2 == 1 && bytes.size() >= 16) {
      // A valid ELF64 little-endian identification, so the reader goes further.
      const unsigned char ident[] = {0x7f, 'E', 'L', 'F', ELFCLASS64, ELFDATA2LSB, EV_CURRENT};
      std::memcpy(bytes.data(), ident, sizeof ident);
    }
    ParseOutcome o = parse(bytes);
    threw += o.threw ? 1 : 0;
  }
  CHECK(threw > 250);  // random bytes are almost never a plugin
}

TEST_CASE("PluginIndex.parse_task_records.mutated_plugin_never_crashes") {
  const auto original = read_bytes(math_plugin);
  const ParseOutcome clean = parse(original);
  REQUIRE_FALSE(clean.threw);
  CHECK(clean.problems == 0);
  CHECK(clean.records == PluginIndex::read_manifest(math_plugin).size());

  const auto ranges = interesting_ranges(original);
  std::mt19937_64 rng(20240601);
  std::size_t threw = 0, with_problems = 0, fine = 0;
  for (int i = 0; i < 600; ++i) {
    CAPTURE(i);
    auto bytes = original;
    const int mutations = 1 + static_cast<int>(rng() % 8);
    for (int m = 0; m < mutations; ++m) {
      auto [begin, size] = ranges[rng() % ranges.size()];
      if (i % 5 == 0) {
        begin = 0;  // anywhere in the file
        size = bytes.size();
      }
      std::size_t at = begin + rng() % size;
      switch (rng() % 4) {
        case 0: bytes[at] = static_cast<unsigned char>(rng()); break;
        case 1: bytes[at] ^= static_cast<unsigned char>(1u << (rng() % 8)); break;
        case 2: {  // an extreme 64-bit value
          const std::uint64_t extremes[] = {0, ~std::uint64_t{0}, 0x7fffffffffffffffull,
                                            0x8000000000000000ull, original.size(),
                                            original.size() + 1, 0xffffffffull};
          std::uint64_t v = extremes[rng() % std::size(extremes)];
          std::size_t n = std::min<std::size_t>(8, bytes.size() - at);
          std::memcpy(bytes.data() + at, &v, n);
          break;
        }
        default: bytes.resize(at); break;  // truncate
      }
      if (bytes.empty()) break;
    }
    ParseOutcome o = parse(bytes);
    if (o.threw) {
      ++threw;
    } else if (o.problems > 0 || o.records != clean.records) {
      ++with_problems;
    } else {
      ++fine;
    }
  }
  INFO("mutations: " << threw << " refused, " << with_problems << " with bad records, " << fine
                     << " harmless");
  // The mutations reach the reader's checks, not only bytes it ignores.
  CHECK(threw > 0);
  CHECK(with_problems > 0);
}

TEST_CASE("PluginIndex.read_manifest.corrupted_records_are_left_out") {
  support::TempDir dir;
  auto bytes = read_bytes(math_plugin);
  // Every record starts with the magic "FERRYTK\0"; break the first one.
  const std::string magic(ferry::detail::task_record_magic, 8);
  auto it = std::search(bytes.begin(), bytes.end(), magic.begin(), magic.end());
  REQUIRE(it != bytes.end());
  *it = 'X';
  fs::path file = dir.path / "libmath.so";
  write_bytes(file, bytes.data(), bytes.size(), fs::perms(0755));
  auto tasks = PluginIndex::read_manifest(file);
  CHECK(tasks.size() + 1 == PluginIndex::read_manifest(math_plugin).size());
  auto records = ferry::detail::read_task_records(file);
  CHECK(std::count_if(records.begin(), records.end(),
                      [](const auto& r) { return r.problem == "record has a bad magic"; }) == 1);
}

TEST_CASE("PluginIndex.read_manifest.a_record_whose_name_is_no_task_name_is_left_out") {
  // FERRY_TASK refuses such a name at compile time, but a record made by hand was read with any
  // bytes: `ferry list` showed an escape sequence's effect, or two rows that both read "square"
  // (one with U+200B in it), and `ferry run` ran the look-alike. "greet" becomes "gr<ESC>et" and
  // "gr\u00e9t" everywhere in the file (its symbol too, which the name must match).
  const std::string name = "greet";
  for (const std::string& bad : {std::string("gr\x1b" "et"), std::string("gr\xc3\xa9t")}) {
    CAPTURE(bad);
    REQUIRE(bad.size() == name.size());
    support::TempDir dir;
    auto bytes = read_bytes(math_plugin);
    std::size_t replaced = 0;
    for (auto it = bytes.begin(); (it = std::search(it, bytes.end(), name.begin(), name.end())) != bytes.end(); ++replaced)
      it = std::copy(bad.begin(), bad.end(), it);
    REQUIRE(replaced >= 2);  // the symbol and the record at least
    fs::path file = dir.path / "libmath.so";
    write_bytes(file, bytes.data(), bytes.size(), fs::perms(0755));
    auto tasks = PluginIndex::read_manifest(file);
    CHECK(tasks.size() + 1 == PluginIndex::read_manifest(math_plugin).size());
    CHECK(std::none_of(tasks.begin(), tasks.end(), [&](const auto& t) { return t.name == bad; }));
    auto records = ferry::detail::read_task_records(file);
    CHECK(std::count_if(records.begin(), records.end(), [](const auto& r) {
            return r.problem.rfind("record name is not a task name", 0) == 0;
          }) == 1);
  }
  static_assert(ferry::detail::valid_task_name("math::norm") && ferry::detail::valid_task_name("math.square"));
  static_assert(!ferry::detail::valid_task_name("a:b") && !ferry::detail::valid_task_name("squ\u200bare") &&
                !ferry::detail::valid_task_name("gr\xc3\xa9t") && !ferry::detail::valid_task_name(""));
}

TEST_CASE("PluginIndex.read_manifest.a_record_claiming_a_huge_name_is_left_out") {
  // A record's name and signature are copied for every symbol that points at it, and a hostile
  // file's symbols can all point at one: their sizes are bounded (4 KiB of name, 16 KiB of
  // signature), else reading a 1 MB file could take gigabytes.
  support::TempDir dir;
  auto bytes = read_bytes(math_plugin);
  const std::string magic(ferry::detail::task_record_magic, 8);
  auto it = std::search(bytes.begin(), bytes.end(), magic.begin(), magic.end());
  REQUIRE(it != bytes.end());
  const std::uint32_t huge = 5000;
  std::memcpy(&*it + offsetof(ferry::detail::TaskRecordHeader, name_size), &huge, sizeof huge);
  fs::path file = dir.path / "libmath.so";
  write_bytes(file, bytes.data(), bytes.size(), fs::perms(0755));
  auto records = ferry::detail::read_task_records(file);
  CHECK(std::count_if(records.begin(), records.end(), [](const auto& r) {
          return r.problem.find("longer than a task's name") != std::string::npos;
        }) == 1);
  CHECK(PluginIndex::read_manifest(file).size() + 1 == PluginIndex::read_manifest(math_plugin).size());
}

TEST_CASE("PluginIndex.read_manifest.a_file_claiming_tables_larger_than_a_plugin_has_is_not_read") {
  // Sparse, a few MiB on disk, its symbol table and names claiming 32 MiB each: a scan read them
  // whole (up to 256 MiB a table: 2.8 s and 528 MB for one such file, at every scan it changed
  // for, in any directory on the plugin path, refused ones too).
  support::TempDir dir;
  auto bytes = read_bytes(math_plugin);
  Elf64_Ehdr eh;
  std::memcpy(&eh, bytes.data(), sizeof eh);
  const std::uint64_t size = bytes.size(), claimed = std::uint64_t{32} << 20;
  bool patched = false;
  for (std::size_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, bytes.data() + eh.e_shoff + i * sizeof sh, sizeof sh);
    if (sh.sh_type != SHT_DYNSYM) continue;
    Elf64_Shdr names;
    std::memcpy(&names, bytes.data() + eh.e_shoff + sh.sh_link * sizeof names, sizeof names);
    sh.sh_offset = size;
    sh.sh_size = claimed;
    names.sh_offset = size + claimed;
    names.sh_size = claimed;
    std::memcpy(bytes.data() + eh.e_shoff + i * sizeof sh, &sh, sizeof sh);
    std::memcpy(bytes.data() + eh.e_shoff + sh.sh_link * sizeof names, &names, sizeof names);
    patched = true;
  }
  REQUIRE(patched);
  const fs::path file = dir.path / "libhuge.so";
  write_bytes(file, bytes.data(), bytes.size(), fs::perms(0755));
  fs::resize_file(file, size + 2 * claimed);
  const std::string msg = plugin_error([&] { PluginIndex::read_manifest(file); });
  CHECK(contains(msg, "a table of 33554432 bytes is larger than ferry reads"));
}

// ---- the index -------------------------------------------------------------------------------

TEST_CASE("PluginIndex.find.finds_a_task") {
  support::TempDir dir;
  fs::path lib = install(math_plugin, dir.path, "libmath.so");
  PluginIndex index({dir.path});
  TaskInfo t = index.find("square");
  CHECK(t.name == "square");
  CHECK(t.signature == "i32(i32)");
  CHECK(t.plugin == "math");
  CHECK(t.library == fs::canonical(lib));
  CHECK(index.find("math.square").name == "math.square");
  CHECK(index.find("math:square").library == fs::canonical(lib));
  CHECK(index.find("sum").signature == "f64(vector<f64>)");
  // A task registered from a namespace keeps it: FERRY_TASK(math::norm) is "math::norm", and
  // with its plugin "math:math::norm".
  CHECK(index.find("math::norm").signature == "f64(math::Vec2)");
  CHECK(index.find("math:math::norm").library == fs::canonical(lib));
  CHECK(index.skipped().empty());
  CHECK(index.directories() == std::vector<fs::path>{dir.path});
}

TEST_CASE("PluginIndex.find.two_plugins_with_one_name_are_ambiguous") {
  support::TempDir dir;
  fs::path one = install(math_plugin, dir.path, "libmath.so");
  fs::path two = install(math_plugin, dir.path, "libmath2.so");
  PluginIndex index({dir.path});
  std::string msg = plugin_error([&] { index.find("square"); });
  CHECK(contains(msg, fs::canonical(one).string()));
  CHECK(contains(msg, fs::canonical(two).string()));
  CHECK(contains(msg, "'plugin:square'"));

  TaskInfo t2 = index.find("math2:square");
  CHECK(t2.plugin == "math2");
  CHECK(t2.library == fs::canonical(two));
  TaskInfo t1 = index.find("math:square");
  CHECK(t1.plugin == "math");
  CHECK(t1.library == fs::canonical(one));
  // Unknown plugin qualifier: nothing matches.
  CHECK(contains(plugin_error([&] { index.find("math3:square"); }), "no plugin provides task"));
}

TEST_CASE("PluginIndex.find.rescans_on_miss") {
  support::TempDir dir;
  PluginIndex index({dir.path});
  SUBCASE("into an empty directory") {
    CHECK(contains(plugin_error([&] { index.find("square"); }), "no plugin provides task 'square'"));
    install(math_plugin, dir.path, "libmath.so");
    CHECK(index.find("square").plugin == "math");
  }
  SUBCASE("next to a plugin already indexed") {
    install(math_plugin, dir.path, "libmath.so");
    CHECK(index.find("square").plugin == "math");
    CHECK_THROWS_AS(index.find("func_async"), PluginError);
    install(seed_plugin, dir.path, "libseed.so");
    TaskInfo t = index.find("func_async");
    CHECK(t.plugin == "seed");
    CHECK(index.find("square").plugin == "math");  // still there
  }
}

// ---- what a scan remembers --------------------------------------------------------------------

namespace {

/// The names of the files of a directory opened or read since the last call, as the kernel tells
/// them (inotify): what the index reads, seen from outside it. A `stat` is neither.
class ReadsIn {
 public:
  explicit ReadsIn(const fs::path& dir) : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    REQUIRE(fd_ >= 0);
    REQUIRE(::inotify_add_watch(fd_, dir.c_str(), IN_OPEN | IN_ACCESS) >= 0);
  }
  ~ReadsIn() { ::close(fd_); }
  ReadsIn(const ReadsIn&) = delete;
  ReadsIn& operator=(const ReadsIn&) = delete;
  std::set<std::string> names() {
    std::set<std::string> out;
    alignas(inotify_event) char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      for (char* p = buf; p < buf + n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(p);
        REQUIRE((ev->mask & IN_Q_OVERFLOW) == 0);
        if (ev->len > 0) out.insert(ev->name);
        p += sizeof(inotify_event) + ev->len;
      }
    }
    return out;
  }

 private:
  int fd_;
};

std::int64_t realtime_ns() {
  struct timespec t {};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

std::int64_t ctime_ns(const fs::path& file) {
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  return static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
}

/// The index remembers what it read of a file only once the file's change time is 2 s behind its
/// scan (a coarse clock could stamp a later write with the same time): waits until `files` are.
void wait_until_settled(const std::vector<fs::path>& files) {
  constexpr std::int64_t settled = 2'200'000'000;
  REQUIRE(support::wait_until(
      [&] {
        const std::int64_t now = realtime_ns();
        return std::all_of(files.begin(), files.end(),
                           [&](const fs::path& f) { return now - ctime_ns(f) > settled; });
      },
      std::chrono::milliseconds(10000)));
}

}  // namespace

TEST_CASE("PluginIndex.scan.an_unchanged_file_that_is_no_plugin_is_not_read_again") {
  // A lookup that misses rescans; each file that is no plugin was read again at every scan
  // (20,000 libraries beside the plugins: 1 s a miss). Its verdict is kept with its identity.
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  const fs::path plain = install(plain_library, dir.path, "libplain.so");  // a library, no plugin
  const fs::path text = dir.path / "libtext.so";
  write_text(text, "not a library\n");
  wait_until_settled({plain, text});
  PluginIndex index({dir.path});
  ReadsIn reads(dir.path);
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  const auto first = reads.names();
  CHECK(first.count("libplain.so") == 1);  // the watch sees the index read them
  CHECK(first.count("libtext.so") == 1);
  const auto skipped = index.skipped();
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  const auto second = reads.names();
  CHECK(second.count("libplain.so") == 0);
  CHECK(second.count("libtext.so") == 0);
  // Still said, as before.
  const auto again = index.skipped();
  REQUIRE(again.size() == skipped.size());
  for (std::size_t i = 0; i < again.size(); ++i) {
    CHECK(again[i].path == skipped[i].path);
    CHECK(again[i].reason == skipped[i].reason);
  }
  CHECK(contains(skipped.at(0).reason + skipped.at(1).reason, "not a ferry plugin"));
  CHECK(index.find("square").plugin == "math");
}

TEST_CASE("PluginIndex.scan.a_file_that_was_no_plugin_is_read_again_when_it_changes") {
  // Each file below keeps its size and modification time (which its owner may set) as it
  // becomes a plugin: one written in place (same inode: only its change time moves), one renamed
  // over, a link pointed at another file. Each is found at the next lookup.
  support::TempDir dir;
  const auto plugin_bytes = read_bytes(math_plugin);
  auto broken = plugin_bytes;
  broken[1] = 'X';  // no ELF magic: "not a shared library", as many bytes as the plugin
  const fs::path in_place = dir.path / "libinplace.so";
  const fs::path renamed = dir.path / "librenamed.so";
  const fs::path linked = dir.path / "liblinked.so";
  const fs::path elsewhere = dir.path / "elsewhere";
  write_bytes(in_place, broken.data(), broken.size(), fs::perms(0755));
  write_bytes(renamed, broken.data(), broken.size(), fs::perms(0755));
  fs::create_directory(elsewhere);
  fs::permissions(elsewhere, fs::perms(0755));
  write_bytes(elsewhere / "old.so", broken.data(), broken.size(), fs::perms(0755));
  install(math_plugin, elsewhere, "new.so");
  fs::create_symlink("elsewhere/old.so", linked);
  wait_until_settled({in_place, renamed, elsewhere / "old.so"});

  PluginIndex index({dir.path});
  CHECK(contains(plugin_error([&] { index.find("square"); }), "no plugin provides task 'square'"));
  CHECK(index.skipped().size() == 3);

  struct stat before {}, after {};
  REQUIRE(::stat(in_place.c_str(), &before) == 0);
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  {
    const int fd = ::open(in_place.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::pwrite(fd, plugin_bytes.data(), plugin_bytes.size(), 0) ==
          static_cast<ssize_t>(plugin_bytes.size()));
    ::close(fd);
  }
  REQUIRE(::utimensat(AT_FDCWD, in_place.c_str(), times, 0) == 0);
  REQUIRE(::stat(in_place.c_str(), &after) == 0);
  REQUIRE(after.st_ino == before.st_ino);
  REQUIRE(after.st_size == before.st_size);
  REQUIRE(after.st_mtim.tv_sec == before.st_mtim.tv_sec);
  REQUIRE(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);

  const fs::path fresh = dir.path / "renamed.new";  // no library's name: not listed
  write_bytes(fresh, plugin_bytes.data(), plugin_bytes.size(), fs::perms(0755));
  REQUIRE(::stat(renamed.c_str(), &before) == 0);
  const struct timespec renamed_times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, fresh.c_str(), renamed_times, 0) == 0);
  fs::rename(fresh, renamed);

  fs::create_symlink("elsewhere/new.so", dir.path / "linked.new");
  fs::rename(dir.path / "linked.new", linked);

  CHECK(index.find("inplace:square").plugin == "inplace");
  CHECK(index.find("renamed:square").plugin == "renamed");
  CHECK(index.find("new:square").plugin == "new");  // a plugin is named by the file a link leads to
  CHECK(index.skipped().empty());
}

TEST_CASE("PluginIndex.scan.a_file_changed_less_than_two_seconds_before_a_scan_is_read_again") {
  // A coarse clock (a jiffy; a second on some file systems) stamps a write made just after the
  // read with the change time the read saw: what was read of a file changed so recently is not
  // kept (this machine's ext4 stamps each change anew, so the race itself is not shown here).
  support::TempDir dir;
  const fs::path text = dir.path / "libtext.so";
  write_text(text, "not a library\n");
  PluginIndex index({dir.path});
  ReadsIn reads(dir.path);
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  CHECK(reads.names().count("libtext.so") == 1);
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  const auto second = reads.names();
  if (realtime_ns() - ctime_ns(text) >= 2'000'000'000) {
    MESSAGE("the scans came more than 2 s after the file was written: nothing to show");
    return;
  }
  CHECK(second.count("libtext.so") == 1);
}

TEST_CASE("PluginIndex.find.a_hit_whose_link_now_leads_to_another_file_is_read_again") {
  // `ln -sf math-2.so libmath.so` with math-1.so kept: a hit compared the old target with
  // itself, unchanged, and gave it until a lookup missed.
  support::TempDir dir;
  const fs::path plugins = dir.path / "plugins";
  const fs::path store = dir.path / "store";
  for (const auto& d : {plugins, store}) {
    fs::create_directory(d);
    fs::permissions(d, fs::perms(0755));
  }
  install(math_plugin, store, "math-1.so");
  install(math_plugin, store, "math-2.so");
  fs::create_symlink(store / "math-1.so", plugins / "libmath.so");
  PluginIndex index({plugins});
  CHECK(index.find("square").library == fs::canonical(store / "math-1.so"));
  fs::create_symlink(store / "math-2.so", plugins / "link.new");
  fs::rename(plugins / "link.new", plugins / "libmath.so");
  CHECK(index.find("square").library == fs::canonical(store / "math-2.so"));
}

TEST_CASE("PluginIndex.find.a_hit_on_a_plugin_written_in_place_with_its_size_and_mtime_is_read_again") {
  // A hit compared the file's version (device, inode, size, mtime): a plugin written in place
  // with its size and modification time kept (its owner may set it) was taken as it was read.
  support::TempDir dir;
  const fs::path lib = install(math_plugin, dir.path, "libmath.so");
  PluginIndex index({dir.path});
  CHECK(index.find("square").plugin == "math");
  struct stat before {}, after {};
  REQUIRE(::stat(lib.c_str(), &before) == 0);
  // Past a coarse clock's tick (a jiffy), so that the write below gets another change time.
  REQUIRE(support::wait_until([&] { return realtime_ns() - ctime_ns(lib) > 20'000'000; }));
  auto broken = read_bytes(math_plugin);
  broken[1] = 'X';  // no ELF magic
  {
    const int fd = ::open(lib.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::pwrite(fd, broken.data(), broken.size(), 0) == static_cast<ssize_t>(broken.size()));
    ::close(fd);
  }
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, lib.c_str(), times, 0) == 0);
  REQUIRE(::stat(lib.c_str(), &after) == 0);
  if (after.st_ctim.tv_sec == before.st_ctim.tv_sec && after.st_ctim.tv_nsec == before.st_ctim.tv_nsec) {
    MESSAGE("this file system stamped the write with the change time before it: nothing to show");
    return;
  }
  CHECK(contains(plugin_error([&] { index.find("square"); }), "no plugin provides task 'square'"));
}

TEST_CASE("PluginIndex.file_version.moves_when_a_plugin_is_written_in_place_with_its_size_and_mtime") {
  // The version (device, inode, size, mtime) stayed when a plugin was written in place with its
  // size and modification time kept: the index read the new bytes, but TaskInfo::version, and
  // with it the pool's generation of the library, said it was the file the workers had loaded.
  // The change time, which only the clock sets, is part of it now.
  support::TempDir dir;
  const fs::path lib = install(math_plugin, dir.path, "libmath.so");
  PluginIndex index({dir.path});
  const TaskInfo first = index.find("square");
  const std::string version = PluginIndex::file_version(lib);
  CHECK(first.version == version);
  struct stat before {}, after {};
  REQUIRE(::stat(lib.c_str(), &before) == 0);
  REQUIRE(support::wait_until([&] { return realtime_ns() - ctime_ns(lib) > 20'000'000; }));
  const auto bytes = read_bytes(lib);  // the same length (new code would be the same case)
  {
    const int fd = ::open(lib.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, lib.c_str(), times, 0) == 0);
  REQUIRE(::stat(lib.c_str(), &after) == 0);
  REQUIRE(after.st_ino == before.st_ino);
  REQUIRE(after.st_size == before.st_size);
  REQUIRE(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  if (after.st_ctim.tv_sec == before.st_ctim.tv_sec && after.st_ctim.tv_nsec == before.st_ctim.tv_nsec) {
    MESSAGE("this file system stamped the write with the change time before it: nothing to show");
    return;
  }
  CHECK(PluginIndex::file_version(lib) != version);
  const TaskInfo second = index.find("square");
  CHECK(second.version != first.version);
  CHECK(second.version == PluginIndex::file_version(lib));
  // Of the same form as before, "dev:ino:" first (the crash note of a plugin rewritten in place
  // compares those).
  CHECK(second.version.starts_with(std::to_string(after.st_dev) + ":" + std::to_string(after.st_ino) + ":"));
}

TEST_CASE("PluginIndex.skipped.lists_bad_files_with_a_reason") {
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  const fs::path garbage = dir.path / "libgarbage.so";
  std::vector<unsigned char> noise(3000);
  std::mt19937 rng(7);
  for (auto& b : noise) b = static_cast<unsigned char>(rng());
  write_bytes(garbage, noise.data(), noise.size(), fs::perms(0755));
  const fs::path text = dir.path / "libtext.so";
  write_text(text, "not a library\n");
  const fs::path plain = install(plain_library, dir.path, "libplain.so");
  const fs::path truncated = dir.path / "libtruncated.so";
  auto bytes = read_bytes(math_plugin);
  write_bytes(truncated, bytes.data(), 1000, fs::perms(0755));
  write_text(dir.path / "README.txt", "not looked at\n");
  fs::create_directory(dir.path / "libsubdir.so");

  PluginIndex index({dir.path});
  CHECK(index.find("square").plugin == "math");
  auto skipped = index.skipped();
  auto reason = [&](const fs::path& p) -> std::string {
    for (const auto& s : skipped)
      if (s.path == p) return s.reason;
    return "(not skipped)";
  };
  CHECK(skipped.size() == 4);
  CHECK(contains(reason(garbage), "not a shared library"));
  CHECK(contains(reason(text), "not a shared library"));
  CHECK(contains(reason(plain), "not a ferry plugin"));
  CHECK(contains(reason(truncated), "not a shared library"));
  CHECK(reason(dir.path / "README.txt") == "(not skipped)");
  CHECK(reason(dir.path / "libsubdir.so") == "(not skipped)");
  // The good plugin is unaffected by its neighbours.
  CHECK(index.tasks().size() == PluginIndex::read_manifest(math_plugin).size());
}

TEST_CASE("PluginIndex.skipped.remembered_files_are_said_in_the_order_of_their_names") {
  // A file that is no plugin is kept as its name and verdict, and its line made when skipped() is
  // asked, among the lines kept as such (a refused plugin's): in the order of the names, as the
  // scan that read them said them, and in the same words.
  support::TempDir dir;
  write_text(dir.path / "liba.so", "not a library\n");
  const fs::path refused = install(math_plugin, dir.path, "libb.so");
  fs::permissions(refused, fs::perms(0666));
  const fs::path plain = install(plain_library, dir.path, "libc.so");
  write_text(dir.path / "libd.so", "not a library either\n");
  wait_until_settled({dir.path / "liba.so", refused, plain, dir.path / "libd.so"});
  PluginIndex index({dir.path});
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  const auto first = index.skipped();
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  const auto second = index.skipped();
  REQUIRE(first.size() == 4);
  REQUIRE(second.size() == 4);
  const char* names[] = {"liba.so", "libb.so", "libc.so", "libd.so"};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(first[i].path == dir.path / names[i]);
    CHECK(second[i].path == first[i].path);
    CHECK(second[i].reason == first[i].reason);
  }
  CHECK(first[0].reason == (dir.path / "liba.so").string() + " is not a shared library: not an ELF file");
  CHECK(contains(first[1].reason, "refused: "));
  CHECK(contains(first[2].reason, "is not a ferry plugin"));
}

TEST_CASE("PluginIndex.skipped.a_file_this_process_could_not_read_for_want_of_descriptors_is_said_once") {
  // A file that is no plugin, changed since the last scan, read again by a host with no
  // descriptor to spare: its last verdict is kept (it may be read again later), but skipped()
  // said it twice, "cannot read ...: Too many open files" and the old verdict, as if this scan
  // had read both. It says what this scan saw, once.
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  const fs::path text = dir.path / "libtext.so";
  write_text(text, "not a library\n");
  PluginIndex index({dir.path});
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  auto lines_of = [](const std::vector<ferry::SkippedFile>& skipped, const fs::path& file) {
    std::vector<std::string> out;
    for (const auto& s : skipped)
      if (s.path == file) out.push_back(s.reason);
    return out;
  };
  REQUIRE(lines_of(index.skipped(), text).size() == 1);
  std::ofstream(text, std::ios::app) << "still not a library\n";  // another identity: read again
  std::string missed;
  std::vector<ferry::SkippedFile> skipped;
  {
    // One descriptor spare: the directory is listed, the file cannot be opened.
    support::DescriptorsTaken held(1);
    try {
      index.find("nosuch");
    } catch (const PluginError& e) {
      missed = e.what();
    }
    skipped = index.skipped();
  }
  CHECK(contains(missed, "cannot tell which plugin provides task 'nosuch'"));
  const auto said = lines_of(skipped, text);
  std::string all_said;
  for (const auto& why : said) all_said += why + "\n";
  CAPTURE(all_said);
  CHECK(said.size() == 1);
  if (!said.empty()) CHECK(said.front() == "cannot read " + text.string() + ": Too many open files");
  // Descriptors back: the file is read again, and said with its verdict, once.
  CHECK(contains(plugin_error([&] { index.find("nosuch"); }), "no plugin provides task 'nosuch'"));
  const auto again = lines_of(index.skipped(), text);
  REQUIRE(again.size() == 1);
  CHECK(contains(again.front(), "not a shared library"));
}

TEST_CASE("PluginIndex.skipped.reports_unreadable_directories") {
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  const fs::path missing = dir.path / "no-such-dir";
  PluginIndex index({missing, dir.path});
  CHECK(index.find("add").signature == "i32(i32,i32)");
  auto skipped = index.skipped();
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].path == missing);
  CHECK(contains(skipped[0].reason, "cannot read directory"));
}

TEST_CASE("PluginIndex.skipped.an_unreadable_plugin_is_said_unreadable") {
  // A plugin its user cannot read was "not a shared library: Permission denied", and a lookup of
  // its task said only that no plugin provides it. Root reads every file: as root, a child that
  // becomes nobody reads nobody's file of mode 0.
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  const fs::path secret = install(seed_plugin, dir.path, "libseed.so");
  REQUIRE(::chmod(secret.c_str(), 0) == 0);
  if (::geteuid() == 0)
    for (const fs::path& p : {dir.path, dir.path / "libmath.so", secret})
      REQUIRE(::chown(p.c_str(), 65534, 65534) == 0);
  const int code = support::exit_code_of_child(
      [&] {
        if (!support::become_another_user()) return 90;
        int failed = 0;
        auto check = [&](bool ok, const std::string& what, const std::string& said) {
          if (!ok) std::fprintf(stderr, "%s, said: %s\n", what.c_str(), said.c_str());
          failed += ok ? 0 : 1;
        };
        PluginIndex index({dir.path});
        const auto tasks = index.tasks();
        check(by_name(tasks, "add") != nullptr, "the readable plugin beside it is not listed", "");
        std::string reason = "(not skipped)";
        for (const auto& s : index.skipped())
          if (s.path == secret) reason = s.reason;
        check(contains(reason, "cannot read " + secret.string() + ": Permission denied") &&
                  !contains(reason, "not a shared library"),
              "the skipped reason does not say it cannot be read", reason);
        std::string lookup = "(no PluginError)";
        try {
          index.find("func_async");
        } catch (const PluginError& e) {
          lookup = e.what();
        }
        check(contains(lookup, "no plugin provides task 'func_async'") &&
                  contains(lookup, "cannot read " + secret.string() + ": Permission denied"),
              "a missed lookup does not name the plugin it could not read", lookup);
        std::string direct = "(no PluginError)";
        try {
          PluginIndex::read_manifest(secret);
        } catch (const PluginError& e) {
          direct = e.what();
        }
        check(contains(direct, "cannot read " + secret.string() + ": Permission denied"),
              "read_manifest does not say it cannot read the file", direct);
        return failed;
      },
      std::chrono::seconds(30));
  CHECK_MESSAGE(code == 0, "child exit code " << code << " (its stderr says which check failed)");
}

TEST_CASE("PluginIndex.skipped.a_link_to_nothing_or_a_fifo_under_a_plugins_name_is_said") {
  // A link to a plugin not built yet, a loop of links, a FIFO or a device named like a plugin
  // were passed over in silence: `ferry list` showed nothing of them, and a lookup of the task
  // the user expected there said only that no plugin provides it.
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  const fs::path dangling = dir.path / "libnot_built.so";
  fs::create_symlink(dir.path / "build" / "libnot_built.so", dangling);
  const fs::path loop = dir.path / "libloop.so";
  fs::create_symlink(loop.filename(), loop);
  const fs::path fifo = dir.path / "libfifo.so";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const fs::path device = dir.path / "libnull.so";
  fs::create_symlink("/dev/null", device);
  fs::create_directory(dir.path / "libsubdir.so");  // a directory is no file: not said

  PluginIndex index({dir.path});
  CHECK(by_name(index.tasks(), "add"));
  const auto skipped = index.skipped();
  auto reason = [&](const fs::path& p) -> std::string {
    for (const auto& s : skipped)
      if (s.path == p) return s.reason;
    return "(not skipped)";
  };
  CHECK(skipped.size() == 4);
  CHECK(reason(dangling) == "cannot read " + dangling.string() + ": a symbolic link to " +
                                (dir.path / "build" / "libnot_built.so").string() + ", which does not exist");
  CHECK(contains(reason(loop), "cannot read " + loop.string() + ": Too many levels of symbolic links"));
  CHECK(reason(fifo) == "cannot read " + fifo.string() + ": not a regular file (a FIFO)");
  CHECK(reason(device) == "cannot read " + device.string() + ": not a regular file (a character device)");
  CHECK(reason(dir.path / "libsubdir.so") == "(not skipped)");
  const std::string said = plugin_error([&] { index.find("not_built_task"); });
  CHECK(contains(said, "no plugin provides task 'not_built_task'"));
  CHECK(contains(said, dangling.string() + ": a symbolic link to "));
}

TEST_CASE("PluginIndex.tasks.lists_every_task_of_every_plugin") {
  support::TempDir a, b;
  install(math_plugin, a.path, "libmath.so");
  install(seed_plugin, b.path, "libseed.so");
  PluginIndex index({a.path, b.path});
  auto all = index.tasks();
  const auto math = PluginIndex::read_manifest(math_plugin);
  const auto seed = PluginIndex::read_manifest(seed_plugin);
  CHECK(all.size() == math.size() + seed.size());
  for (const auto& t : math) {
    CAPTURE(t.name);
    const TaskInfo* found = by_name(all, t.name);
    REQUIRE(found);
    CHECK(found->plugin == "math");
    CHECK(found->signature == t.signature);
  }
  const TaskInfo* fa = by_name(all, "func_async");
  REQUIRE(fa);
  CHECK(fa->plugin == "seed");
  CHECK(fa->library.parent_path() == fs::canonical(b.path));
}

TEST_CASE("PluginIndex.find.refuses_unsafe_permissions") {
  support::TempDir dir;
  fs::path lib = install(math_plugin, dir.path, "libmath.so");
  fs::path unsafe;
  SUBCASE("group-writable plugin, in a group of others") {
    // A group the owner does not have to itself (65534: nogroup, nobody's); writable by the
    // owner's private group is fine (Trust.group_writable_is_fine_when_the_group_is_the_owners_alone).
    if (::geteuid() != 0) {
      MESSAGE("not root: cannot give a file to another group here");
      return;
    }
    REQUIRE(::chown(lib.c_str(), static_cast<uid_t>(-1), 65534) == 0);
    fs::permissions(lib, fs::perms(0664));
    unsafe = fs::canonical(lib);
  }
  SUBCASE("world-writable plugin") {
    fs::permissions(lib, fs::perms(0646));
    unsafe = fs::canonical(lib);
  }
  SUBCASE("world-writable directory") {
    fs::permissions(dir.path, fs::perms(0777));
    unsafe = fs::canonical(dir.path);
  }
  CAPTURE(unsafe);
  {
    ScopedUnsetEnv no_override("FERRY_ALLOW_UNSAFE_PLUGINS");
    PluginIndex index({dir.path});
    try {
      index.find("square");
      FAIL("an unsafe plugin was accepted");
    } catch (const PluginError& e) {
      CHECK(contains(e.what(), "writable by group or others"));
      CHECK(e.path() == unsafe.string());
    }
    PluginIndex allowed({dir.path}, PluginIndexOptions{.allow_unsafe = true});
    CHECK(allowed.find("square").plugin == "math");
  }
  {
    support::ScopedEnv env("FERRY_ALLOW_UNSAFE_PLUGINS", "1");
    PluginIndex index({dir.path});
    CHECK(index.find("square").plugin == "math");
  }
  {
    support::ScopedEnv env("FERRY_ALLOW_UNSAFE_PLUGINS", "0");
    PluginIndex index({dir.path});
    CHECK(contains(plugin_error([&] { index.find("square"); }), "writable by group or others"));
  }
}

TEST_CASE("PluginIndex.scan.a_way_made_unsafe_between_two_scans_is_refused_at_the_next") {
  // A scan walks each plugin directory's way once and each plugin on from there: a way opened to
  // others after one scan is judged again at the next (nothing of a walk is kept across scans).
  ScopedUnsetEnv no_override("FERRY_ALLOW_UNSAFE_PLUGINS");
  support::TempDir top;
  const fs::path way = top.path / "way";
  const fs::path dir = way / "plugins";
  fs::create_directories(dir);
  fs::permissions(way, fs::perms(0755));
  fs::permissions(dir, fs::perms(0755));
  install(math_plugin, dir, "libmath.so");
  install(seed_plugin, dir, "libseed.so");
  PluginIndex index({dir});
  CHECK(by_name(index.tasks(), "add"));
  CHECK(index.skipped().empty());
  for (const fs::path& opened : {way, dir}) {
    CAPTURE(opened);
    fs::permissions(opened, fs::perms(0777));
    const auto tasks = index.tasks();
    fs::permissions(opened, fs::perms(0755));
    CHECK(tasks.empty());
    const auto skipped = index.skipped();
    REQUIRE(!skipped.empty());
    CHECK(skipped[0].path == dir);
    CHECK(contains(skipped[0].reason, "refused: " + fs::canonical(opened).string()));
    CHECK(contains(skipped[0].reason, "writable by group or others"));
    CHECK(by_name(index.tasks(), "add"));  // closed again: trusted at the next scan
    CHECK(index.skipped().empty());
  }
}

TEST_CASE("PluginIndex.scan.a_link_in_a_trusted_directory_is_walked_to_its_target") {
  // A plugin's walk goes on from its directory's: a link there is still followed by hand, its
  // owner judged and its target's whole way walked, whether the target is elsewhere (an absolute
  // link, a relative one through "..") or beside it.
  ScopedUnsetEnv no_override("FERRY_ALLOW_UNSAFE_PLUGINS");
  support::TempDir top;
  const fs::path dir = top.path / "plugins";
  const fs::path open = top.path / "open";
  const fs::path kept = top.path / "kept";
  for (const fs::path& d : {dir, open, kept}) fs::create_directory(d);
  fs::permissions(dir, fs::perms(0755));
  fs::permissions(open, fs::perms(0777));
  fs::permissions(kept, fs::perms(0755));
  install(math_plugin, open, "libm.so");
  install(seed_plugin, kept, "libs.so");
  fs::create_symlink(open / "libm.so", dir / "libabsolute.so");
  fs::create_symlink("../open/libm.so", dir / "librelative.so");
  fs::create_symlink("../kept/libs.so", dir / "libtrusted.so");
  PluginIndex index({dir});
  auto reason = [&](const std::vector<ferry::SkippedFile>& skipped, const fs::path& p) -> std::string {
    for (const auto& s : skipped)
      if (s.path == p) return s.reason;
    return "(not skipped)";
  };
  for (int scan = 0; scan < 2; ++scan) {  // the first reads the files, the second keeps them
    CAPTURE(scan);
    const auto tasks = index.tasks();
    CHECK(by_name(tasks, "func_async"));  // the link to a trusted plugin
    CHECK(!by_name(tasks, "add"));
    const auto skipped = index.skipped();
    for (const char* name : {"libabsolute.so", "librelative.so"}) {
      CAPTURE(name);
      const std::string why = reason(skipped, dir / name);
      CHECK(contains(why, "refused: " + fs::canonical(open).string() + " (on the way to " + (dir / name).string() +
                              ") is writable by group or others"));
    }
    CHECK(reason(skipped, dir / "libtrusted.so") == "(not skipped)");
  }
  if (::geteuid() == 0) {
    // A link of another user's, in a directory of ours: its owner could point it elsewhere.
    REQUIRE(::lchown((dir / "libtrusted.so").c_str(), 65534, 65534) == 0);
    CHECK(!by_name(index.tasks(), "func_async"));
    CHECK(contains(reason(index.skipped(), dir / "libtrusted.so"), "a symbolic link owned by uid 65534"));
  }
}

TEST_CASE("PluginIndex.check_safe.a_plugin_read_by_a_host_out_of_descriptors_is_not_passed_unjudged") {
  // What a plugin makes the loader read is judged from its load names, kept per file identity.
  // A host out of descriptors could not read them: that was taken as a file the loader skips (no
  // names), remembered, and the plugin passed, then and at every later check while its identity
  // stayed, whatever its search path. Here a DT_NEEDED entry of a copy of the math plugin is
  // made a DT_RUNPATH of the same string ("libm.so.6"): a relative search directory, refused.
  support::TempDir dir;
  const fs::path lib = install(math_plugin, dir.path, "libpatched.so");
  {
    auto bytes = read_bytes(lib);
    REQUIRE(bytes.size() > sizeof(Elf64_Ehdr));
    Elf64_Ehdr eh;
    std::memcpy(&eh, bytes.data(), sizeof eh);
    bool patched = false;
    for (unsigned i = 0; i < eh.e_phnum && !patched; ++i) {
      Elf64_Phdr ph;
      std::memcpy(&ph, bytes.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
      if (ph.p_type != PT_DYNAMIC) continue;
      for (std::size_t at = ph.p_offset; at + sizeof(Elf64_Dyn) <= ph.p_offset + ph.p_filesz; at += sizeof(Elf64_Dyn)) {
        Elf64_Dyn d;
        std::memcpy(&d, bytes.data() + at, sizeof d);
        if (d.d_tag != DT_NEEDED) continue;
        d.d_tag = DT_RUNPATH;
        std::memcpy(bytes.data() + at, &d, sizeof d);
        patched = true;
        break;
      }
    }
    REQUIRE(patched);
    write_bytes(lib, bytes.data(), bytes.size(), fs::perms(0755));
  }
  std::string short_of = "(passed)";
  {
    support::DescriptorsTaken held;
    try {
      PluginIndex::check_safe(lib);
    } catch (const PluginError& e) {
      short_of = e.what();
    }
  }
  CHECK(contains(short_of, "cannot be read now"));
  CHECK(contains(short_of, "out of descriptors or memory"));
  // Descriptors back: read and judged.
  const std::string judged = plugin_error([&] { PluginIndex::check_safe(lib); });
  CHECK(contains(judged, "a relative directory"));
}

TEST_CASE("PluginIndex.find.a_relative_directory_is_the_one_of_the_index_not_of_a_later_chdir") {
  // A relative plugin directory was kept relative: the scan (in a directory another user can
  // write, refused) stored its files by absolute path, and each lookup judged "plugins" against
  // the current directory of the moment: after a chdir to a trusted tree with a directory of that
  // name, find() returned the refused directory's library.
  support::TempDir dir;
  const fs::path theirs = dir.path / "a", mine = dir.path / "b";
  fs::create_directories(theirs / "plugins");
  fs::create_directories(mine / "plugins");
  fs::permissions(theirs / "plugins", fs::perms(0777));
  install(math_plugin, theirs / "plugins", "libmath.so");
  install(math_plugin, mine / "plugins", "libmath.so");
  struct Back {
    fs::path to = fs::current_path();
    ~Back() { fs::current_path(to); }
  } back;
  ScopedUnsetEnv no_override("FERRY_ALLOW_UNSAFE_PLUGINS");
  fs::current_path(theirs);
  PluginIndex index({"plugins"});
  CHECK(contains(plugin_error([&] { index.find("square"); }), "writable by group or others"));
  fs::current_path(mine);
  try {
    const TaskInfo found = index.find("square");
    FAIL("found " << found.library << " after the chdir");
  } catch (const PluginError& e) {
    CHECK(contains(e.what(), "writable by group or others"));
  }
}

TEST_CASE("PluginIndex.find.refuses_another_abi") {
  support::TempDir dir;
  auto bytes = read_bytes(math_plugin);
  const std::string magic(ferry::detail::task_record_magic, 8);
  std::size_t patched = 0;
  for (auto it = bytes.begin();
       (it = std::search(it, bytes.end(), magic.begin(), magic.end())) != bytes.end(); it += 8) {
    const std::uint32_t abi = ferry::detail::plugin_abi_version + 1;
    std::memcpy(&*(it + 8), &abi, 4);  // the abi field follows the magic
    ++patched;
  }
  REQUIRE(patched == PluginIndex::read_manifest(math_plugin).size());
  write_bytes(dir.path / "libmath.so", bytes.data(), bytes.size(), fs::perms(0755));
  PluginIndex index({dir.path});
  std::string msg = plugin_error([&] { index.find("square"); });
  CHECK(contains(msg, "ABI " + std::to_string(ferry::detail::plugin_abi_version + 1)));
  CHECK(contains(msg, "rebuild the plugin"));
}

TEST_CASE("PluginIndex.read_manifest.reads_a_record_of_abi_3_and_find_refuses_it") {
  // Before ABI 4 a record's header had no `layout` (56 bytes, not 64), so its text came 8 bytes
  // earlier: this plugin's records made so. Read with the new header, their names were misread
  // ("record name differs from its symbol") and the plugin was not said to be of another ABI.
  support::TempDir dir;
  auto bytes = read_bytes(math_plugin);
  const std::string magic(ferry::detail::task_record_magic, 8);
  const auto old_head = offsetof(ferry::detail::TaskRecordHeader, layout);
  std::size_t made = 0;
  for (auto it = bytes.begin();
       (it = std::search(it, bytes.end(), magic.begin(), magic.end())) != bytes.end(); it += 8) {
    ferry::detail::TaskRecordHeader h;
    std::memcpy(&h, &*it, sizeof h);
    const std::uint32_t abi = 3;
    std::memcpy(&*(it + 8), &abi, 4);
    const std::size_t text = h.name_size + h.signature_size + 2;
    std::memmove(&*(it + old_head), &*(it + sizeof h), text);
    ++made;
  }
  REQUIRE(made > 0);
  write_bytes(dir.path / "libmath.so", bytes.data(), bytes.size(), fs::perms(0755));
  auto tasks = PluginIndex::read_manifest(dir.path / "libmath.so");
  REQUIRE(tasks.size() == made);
  auto square = std::find_if(tasks.begin(), tasks.end(), [](const ferry::TaskInfo& t) { return t.name == "square"; });
  REQUIRE(square != tasks.end());
  CHECK(square->signature == "i32(i32)");
  CHECK(square->abi == 3);
  PluginIndex index({dir.path});
  std::string msg = plugin_error([&] { index.find("square"); });
  CHECK(contains(msg, "ABI 3"));
  CHECK(contains(msg, "rebuild the plugin"));
}

TEST_CASE("PluginIndex.search_path.appends_FERRY_PLUGIN_PATH") {
  using Paths = std::vector<fs::path>;
  SUBCASE("entries in order, empty ones ignored") {
    support::ScopedEnv env("FERRY_PLUGIN_PATH", "first::second:");
    CHECK(PluginIndex::search_path({"given"}) == Paths{"given", "first", "second"});
  }
  SUBCASE("leading colon and a single entry") {
    support::ScopedEnv env("FERRY_PLUGIN_PATH", ":only");
    CHECK(PluginIndex::search_path({}) == Paths{"only"});
  }
  SUBCASE("empty variable") {
    support::ScopedEnv env("FERRY_PLUGIN_PATH", "");
    CHECK(PluginIndex::search_path({"given"}) == Paths{"given"});
  }
  SUBCASE("just colons") {
    support::ScopedEnv env("FERRY_PLUGIN_PATH", ":::");
    CHECK(PluginIndex::search_path({"a", "b"}) == Paths{"a", "b"});
  }
  SUBCASE("unset") {
    ScopedUnsetEnv env("FERRY_PLUGIN_PATH");
    CHECK(PluginIndex::search_path({"given"}) == Paths{"given"});
  }
}

TEST_CASE("PluginIndex.find.unknown_task_lists_searched_directories") {
  support::TempDir a, b;
  install(math_plugin, a.path, "libmath.so");
  SUBCASE("two directories") {
    PluginIndex index({a.path, b.path});
    try {
      index.find("no_such_task");
      FAIL("no PluginError");
    } catch (const PluginError& e) {
      CHECK(contains(e.what(), "'no_such_task'"));
      CHECK(contains(e.what(), a.path.string()));
      CHECK(contains(e.what(), b.path.string()));
      CHECK(e.symbol() == "ferry_task:no_such_task");
    }
  }
  SUBCASE("no directories at all") {
    PluginIndex index({});
    CHECK(contains(plugin_error([&] { index.find("square"); }), "FERRY_PLUGIN_PATH"));
  }
  SUBCASE("one that cannot be read says why") {
    // A host out of descriptors could read none, and the message only said that no plugin had
    // the task.
    const fs::path file = b.path / "not-a-directory";
    std::ofstream(file) << "x";
    PluginIndex index({a.path, file});
    const std::string said = plugin_error([&] { index.find("square_of_nothing"); });
    CHECK(contains(said, file.string() + " (cannot read directory: "));
  }
}

TEST_CASE("PluginIndex.find.a_miss_suggests_close_names") {
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  PluginIndex index({dir.path});
  SUBCASE("the name without its namespace") {
    std::string msg = plugin_error([&] { index.find("norm"); });
    CHECK(contains(msg, "no plugin provides task 'norm'"));
    CHECK(contains(msg, "did you mean 'math::norm' (plugin math)?"));
  }
  SUBCASE("the plugin qualifier without the namespace") {
    CHECK(contains(plugin_error([&] { index.find("math:norm"); }),
                   "did you mean 'math:math::norm'?"));
  }
  SUBCASE("'::' where the plugin qualifier ':' was meant") {
    CHECK(contains(plugin_error([&] { index.find("math::square"); }),
                   "did you mean 'square' (plugin math)"));
  }
  SUBCASE("another namespace") {
    CHECK(contains(plugin_error([&] { index.find("geo::norm"); }), "'math::norm' (plugin math)"));
  }
  SUBCASE("a typing mistake, or another case") {
    CHECK(contains(plugin_error([&] { index.find("sqaure"); }),
                   "did you mean 'square' (plugin math)"));
    CHECK(contains(plugin_error([&] { index.find("Greet"); }),
                   "did you mean 'greet' (plugin math)?"));
  }
  SUBCASE("the same name in another plugin") {
    install(math_plugin, dir.path, "libmath2.so");
    std::string msg = plugin_error([&] { index.find("math3:square"); });
    CHECK(contains(msg, "did you mean 'math:square' or 'math2:square'?"));
  }
  SUBCASE("nothing close: no suggestion") {
    std::string msg = plugin_error([&] { index.find("no_such_task_at_all"); });
    CHECK(contains(msg, "no plugin provides task 'no_such_task_at_all'"));
    CHECK_FALSE(contains(msg, "did you mean"));
  }
}

TEST_CASE("PluginIndex.find.is_thread_safe") {
  support::TempDir dir;
  install(math_plugin, dir.path, "libmath.so");
  PluginIndex index({dir.path});
  std::atomic<int> ok{0}, misses{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        try {
          if (index.find(t % 2 ? "square" : "add").plugin == "math") ++ok;
          index.find("missing_" + std::to_string(i));  // a miss rescans under the lock
        } catch (const PluginError&) {
          ++misses;
        }
        if (i % 10 == 0) (void)index.tasks();
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok == 200);
  CHECK(misses == 200);
}

// ---- Boost.DLL's view of the records --------------------------------------------------------

#include <boost/dll/library_info.hpp>

TEST_CASE("PluginIndex.records_are_listed_by_boost_dll_library_info") {
  // Without loading the library: the tasks are Boost.DLL-visible symbols of section ferry_tasks.
  boost::dll::library_info info(FERRY_TEST_MATH_PLUGIN);
  auto sections = info.sections();
  CHECK(std::find(sections.begin(), sections.end(), "ferry_tasks") != sections.end());
  auto symbols = info.symbols("ferry_tasks");
  for (const char* s : {"ferry_task:square", "ferry_task:math.square", "ferry_task:add", "ferry_task:sum"})
    CHECK(std::find(symbols.begin(), symbols.end(), s) != symbols.end());
  auto manifest = ferry::PluginIndex::read_manifest(FERRY_TEST_MATH_PLUGIN);
  CHECK(symbols.size() == manifest.size());
}

TEST_CASE("PluginIndex.parse_task_records.replays_the_fuzz_corpus") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(FERRY_TEST_DATA_DIR) / "fuzz" / "elf";
  REQUIRE(fs::is_directory(dir));
  // Each seed parses or is refused with ElfError (any other exception, or a crash, fails).
  std::size_t replayed = 0, refused = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CAPTURE(e.path().filename().string());
    ++replayed;
    try {
      ferry::detail::parse_task_records(reinterpret_cast<const unsigned char*>(bytes.data()),
                                        bytes.size());
    } catch (const ferry::detail::ElfError&) {
      ++refused;
    }
  }
  CHECK(replayed >= 1);
  CHECK(refused >= 1);  // elf_magic_only.bin: a header cut after its magic
}
