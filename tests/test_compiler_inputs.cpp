// SPDX-License-Identifier: BSD-3-Clause
// What the FERRY_WRAP compiler and linker read and run (core/src/wrap/compiler_inputs.*): their
// lists of what they read, parsed as each tool writes them, and the flags judged before they run.
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include <doctest/doctest.h>

#include "support/fixture.hpp"
#include "wrap/compiler_inputs.hpp"

namespace fs = std::filesystem;
using ferry::detail::compile_flags;
using ferry::detail::compiler_list_inputs;
using ferry::detail::linker_list_inputs;
using ferry::detail::untrusted_compiler_flag;
using ferry::detail::untrusted_input;
using Names = std::vector<std::string>;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Runs a shell command; true when it exits 0.
bool shell(const std::string& command) {
  int status = std::system((command + " >/dev/null 2>&1").c_str());
  return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// A private directory with one open to others (0777) in it.
struct Dirs {
  support::TempDir root;
  fs::path open = root.path / "open";
  Dirs() {
    fs::create_directories(open);
    fs::permissions(open, fs::perms(0777), fs::perm_options::replace);
  }
};

}  // namespace

TEST_CASE("CompilerInputs.a_compiler_list_is_one_rule_with_its_escapes") {
  CHECK(compiler_list_inputs("/c/wrap.so: /c/wrap.cpp /usr/include/stdc-predef.h \\\n /x/sp\\ ace/k.hpp /x/\\#h.hpp \\\n"
                             " /x/$$d.hpp\n") ==
        Names{"/c/wrap.cpp", "/usr/include/stdc-predef.h", "/x/sp ace/k.hpp", "/x/#h.hpp", "/x/$d.hpp"});
  CHECK(compiler_list_inputs("a.o: a.cpp\n\n") == Names{"a.cpp"});
  // A newline in a name ends the rule early: what follows is not whitespace.
  CHECK_FALSE(compiler_list_inputs("a.o: /x/nl\ndir/k.hpp\n"));
  // -MP's empty rules (or any second rule) are not a list ferry reads.
  CHECK_FALSE(compiler_list_inputs("a.o: /x/k.hpp\n\n/x/k.hpp:\n"));
  CHECK_FALSE(compiler_list_inputs("no target here\n"));
  CHECK_FALSE(compiler_list_inputs(""));
}

TEST_CASE("CompilerInputs.a_linker_list_is_read_as_each_linker_writes_it") {
  SUBCASE("GNU ld and gold: two spaces, nothing escaped") {
    const std::string text = "/c/w.so: \\\n  /usr/lib/crti.o \\\n  /x/sp ace/lib.so\n\n/usr/lib/crti.o:\n\n/x/sp ace/lib.so:\n";
    CHECK(linker_list_inputs(text, "/c/w.so") == Names{"/usr/lib/crti.o", "/x/sp ace/lib.so"});
    CHECK_FALSE(linker_list_inputs(text, "/c/other.so"));
  }
  SUBCASE("lld: one space, escaped as gcc does") {
    const std::string text = "/c/w.so: \\\n /usr/lib/crti.o \\\n /x/sp\\ ace/lib.so\n\n/usr/lib/crti.o:\n\n/x/sp\\ ace/lib.so:\n";
    CHECK(linker_list_inputs(text, "/c/w.so") == Names{"/usr/lib/crti.o", "/x/sp ace/lib.so"});
  }
  SUBCASE("a name with a newline no longer matches the empty rules") {
    const std::string text = "/c/w.so: \\\n  /x/nl\ndir.so\n\n/x/nl\ndir.so:\n";
    CHECK_FALSE(linker_list_inputs(text, "/c/w.so"));
  }
  SUBCASE("cut short") {
    CHECK_FALSE(linker_list_inputs("/c/w.so: \\\n  /usr/lib/crti.o \\\n  /x/lib.so\n\n/usr/lib/crti.o:\n", "/c/w.so"));
  }
  SUBCASE("as this machine's linkers write it") {
    // A library in a directory whose name has a space: each linker's own list of a real link.
    support::TempDir dir;
    fs::path spaced = dir.path / "sp ace";
    fs::create_directories(spaced);
    fs::copy_file(FERRY_TEST_PLAIN_LIBRARY, spaced / "libplain.so");
    std::ofstream(dir.path / "x.cpp") << "int x() { return 1; }\n";
    for (const char* linker : {"bfd", "gold", "lld"}) {
      CAPTURE(linker);
      const fs::path out = dir.path / (std::string("x-") + linker + ".so"), list = dir.path / (std::string(linker) + ".d");
      if (!shell("c++ -fPIC -shared -fuse-ld=" + std::string(linker) + " -o '" + out.string() + "' '" +
                 (dir.path / "x.cpp").string() + "' '" + (spaced / "libplain.so").string() +
                 "' -Wl,--dependency-file='" + list.string() + "'")) {
        MESSAGE("no " << linker << " linker with --dependency-file here");
        continue;
      }
      auto inputs = linker_list_inputs(read_text(list), out.string());
      REQUIRE(inputs);
      CHECK(std::find(inputs->begin(), inputs->end(), (spaced / "libplain.so").string()) != inputs->end());
    }
  }
}

TEST_CASE("CompilerInputs.what_was_read_must_be_there_and_trusted") {
  Dirs d;
  support::TempDir scratch;
  std::ofstream(d.open / "k.hpp") << "\n";
  std::ofstream(d.root.path / "mine.hpp") << "\n";
  CHECK(untrusted_input({"/usr/include/stdio.h", (d.root.path / "mine.hpp").string()}, "/", scratch.path) == "");
  CHECK(contains(untrusted_input({(d.open / "k.hpp").string()}, "/", scratch.path), "writable by group or others"));
  // Relative names are the compiler's current directory's.
  CHECK(contains(untrusted_input({"open/k.hpp"}, d.root.path, scratch.path), "writable by group or others"));
  // Missing: a misread list, unless it is the compiler's temporary object in its TMPDIR.
  CHECK(contains(untrusted_input({(d.root.path / "gone.hpp").string()}, "/", scratch.path), "the list cannot be trusted"));
  CHECK(untrusted_input({(scratch.path / "ccXXXX.o").string()}, "/", scratch.path) == "");
  CHECK(untrusted_input({}, "/", scratch.path) != "");
  // The scratch directory however it is spelled (FERRY_CACHE_DIR with a trailing slash refused
  // every wrap).
  CHECK(untrusted_input({(scratch.path / "ccXXXX.o").string()}, "/", scratch.path.string() + "/") == "");
  // As listed, not normalised: `link/..` is the parent of where the link leads (a review's
  // reproduction: `-L trusted/link/../lib` read a library of the open directory, judged as
  // `trusted/lib`).
  const fs::path mine = d.root.path / "mine";
  fs::create_directories(mine / "lib");
  fs::create_directories(d.open / "inner");
  fs::create_directories(d.open / "lib");
  std::ofstream(mine / "lib" / "libfoo.so") << "\n";
  std::ofstream(d.open / "lib" / "libfoo.so") << "\n";
  fs::create_directory_symlink(d.open / "inner", mine / "link");
  CHECK(contains(untrusted_input({(mine / "link" / ".." / "lib" / "libfoo.so").string()}, "/", scratch.path),
                 "writable by group or others"));
  // Two temporaries: the compiler compiled a second source (taken from among the flags), whose
  // headers its -MF list no longer holds.
  CHECK(contains(untrusted_input({(scratch.path / "ccA.o").string(), (scratch.path / "ccB.o").string()}, "/", scratch.path),
                 "more than the wrap's own source"));
  // A thin archive: GNU ld and lld read its members, named inside it, without listing them.
  std::ofstream(mine / "lib" / "libthin.a") << "!<thin>\n/tmp/open/evil.o/\n";
  CHECK(contains(untrusted_input({(mine / "lib" / "libthin.a").string()}, "/", scratch.path), "thin archive"));
}

TEST_CASE("CompilerInputs.flags_are_an_allowlist_and_searched_directories_are_judged") {
  // The forms of two reviews' reproductions: each ran or loaded a file from a directory others
  // can write, past a check that knew only some spellings. Only flags whose effect is known are
  // taken now.
  Dirs d;
  const std::string open = d.open.string();
  const fs::path cwd = d.root.path;
  for (const Names& flags : {Names{"-I" + open}, {"-I", open}, {"-isystem", open}, {"-isystem" + open}, {"-iquote", open},
                             {"-idirafter", open}, {"-L" + open}, {"-L", open}, {"-include", open + "/k.hpp"},
                             {open + "/libfoo.so"}, {open + "/x.o"}, {"-Wl,--version-script=" + open + "/v.map"}}) {
    CAPTURE(flags);
    CHECK(contains(untrusted_compiler_flag(flags, cwd), "writable by group or others"));
  }
  SUBCASE("relative directories are the current directory's") {
    for (const Names& flags : {Names{"-I."}, {"-Iinclude"}, {"-L", "lib"}}) {
      CAPTURE(flags);
      CHECK(contains(untrusted_compiler_flag(flags, d.open), "writable by group or others"));
    }
  }
  for (const Names& flags : {
           Names{"-B" + open + "/"}, {"-B", open}, {"-Bx"}, {"--prefix=" + open}, {"-fplugin=" + open + "/p.so"},
           {"-fplugin=annobin"}, {"--plugin=" + open + "/p.so"}, {"-fpass-plugin=" + open + "/p.so"},
           {"-specs=" + open + "/my.specs"}, {"-wrapper", "/usr/bin/env,LD_PRELOAD=" + open + "/p.so"},
           {"-fuse-ld=" + open + "/ld"}, {"--ld-path=" + open + "/ld"}, {"-Wl,-plugin," + open + "/p.so"},
           {"-Wl,-plugin", "-Wl," + open + "/p.so"}, {"-Xlinker", "-plugin", "-Wl," + open + "/p.so"},
           {"--for-linker=-plugin", "--for-linker=" + open + "/p.so"}, {"-Wl,-mllvm,-load=" + open + "/p.so"},
           {"-Wl,--plugin-opt=-load=" + open + "/p.so"}, {"-Wl,@" + open + "/opts"}, {"@" + open + "/opts"},
           {"-Wp,-fplugin=" + open + "/p.so"}, {"-Wp,-load," + open + "/p.so"}, {"-Xpreprocessor", "-MD"},
           {"-Wa,@" + open + "/opts"}, {"-Xclang", "-load"}, {"--config", open + "/x.cfg"}, {"-iplugindir=" + open},
           {"-fmodule-mapper=|" + open + "/prog"}, {"--module-mapper=|" + open + "/prog"}, {"-save-temps"},
           {"--save-temps"}, {"-MD"}, {"-MMD"}, {"-Wl,--dependency-file=x"}, {"-include-pch", open + "/x.pch"},
           {"-ccc-install-dir", open}, {"--cuda-path=" + open}, {"-fmodules"}, {"-fmodules-cache-path=" + open},
           {"-mllvm", "-load=x"}, {"-x", "c++"}, {open + "/helper.cpp"}, {"-o", "x"}, {"-Wl,-T," + open + "/s.ld"},
           {"-Wl,-z,foo"}, {"-include-pch", "/opt/x.so"}, {"-include" + open + "/k.hpp"}, {"-mllvm=-load=x"},
           {"-fopt-info=" + open + "/f"},
           // The third review's: gcc reads -imacros before any -include, so a precompiled header
           // beside it was used; a response file named like a library; a value taken across
           // arguments (`--sysroot=` then a flag, `-Wl,-rpath` then another -Wl); a source file
           // whose name holds ".so."; files of the current directory no list names.
           {"-imacros", open + "/k.hpp"}, {"@" + open + "/opts.so"}, {"--sysroot=", "-fplugin=" + open + "/p.so"},
           {"-Wl,-rpath", "x.so", "-Wl,--plugin=" + open + "/p.so"}, {"-Xlinker", "-rpath", "-lm", "-Xlinker", "x"},
           {open + "/evil.so.cpp"}, {"/x.so.d/a.cpp"}, {"-fauto-profile"}, {"-fprofile-use"}, {"-fprofile-instr-use"},
           {"-fsave-optimization-record"}, {"-gen-cdb-fragment-path", open}, {"-isystem-after", open}, {"-I=inc"},
           {"-module-dependency-dir", open}, {"-D"}, {"-include", "-fplugin=x"},
           // The fourth review's: a value apart, or a linker value, that starts with '@' is a file
           // of more arguments to the compiler, collect2 and the linkers; -f switches that take the
           // next argument; clang's .gcno written into the cwd; clang running tools from a sysroot.
           {"-Wl,-rpath,@" + open + "/rsp"}, {"-Xlinker", "-rpath", "-Xlinker", "@" + open + "/rsp"},
           {"-D", "@" + open + "/rsp"}, {"-include", "@" + open + "/rsp"}, {"-l", "@x"}, {"-isystem", "@x"},
           {"-fdebug-compilation-dir", "x"}, {"-ftrapv-handler", "x"}, {"-filelist", "x"},
           {"-fintrinsic-modules-path", "x"}, {"-ftest-coverage"}, {"--sysroot=" + open}, {"--sysroot=/"},
           // The fifth review's: lld lists `link/../x.o` resolved, not as it read it; clang writes
           // <cwd>/<output>.dwo through a link; gold and lld take -library-path as a search path.
           {"/opt/link/../lib/x.o"}, {"-l", "../x"}, {"-Wl,--version-script=/opt/link/../v.map"}, {"-gsplit-dwarf"},
           {"-library-path", "/opt"}, {"-Wl,-library-path,/opt"}}) {
    CAPTURE(flags);
    CHECK(contains(untrusted_compiler_flag(flags, cwd), "is not among the flags FERRY_WRAP takes"));
    // FERRY_ALLOW_UNSAFE_PLUGINS lets what the list does not know through.
    CHECK(untrusted_compiler_flag(flags, cwd, /*allow_unknown=*/true) == "");
  }
  // Ordinary flags pass, as do ferry's own.
  CHECK(untrusted_compiler_flag({"-O2", "-DNDEBUG", "-g", "-ggdb3", "-DK=7", "-UK", "-I/usr/include", "-isystem", "/usr/include",
                                 "-std=c++20", "-fPIC", "-fvisibility=hidden", "-fno-omit-frame-pointer",
                                 "-fsanitize=address,undefined", "-flto=auto", "-march=x86-64", "-m64", "-Wall",
                                 "-Wno-unused", "-Werror=return-type", "-pthread", "-fopenmp", "-fuse-ld=gold",
                                 "-Wl,-O1", "-Wl,-z,defs", "-Wl,--as-needed", "-Wl,-rpath,/opt/lib", "-Xlinker",
                                 "--no-undefined", "-lm", "-L/usr/lib", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                                 "-include", "/usr/include/stdio.h"},
                                cwd) == "");
  // Distributions' default flags (Debian's dpkg-buildflags, Fedora's and Arch's), and others a
  // review found refused.
  CHECK(untrusted_compiler_flag({"-g", "-O2", "-ffile-prefix-map=/build/x=.", "-fstack-protector-strong", "-Wformat",
                                 "-Werror=format-security", "-Wdate-time", "-D_FORTIFY_SOURCE=2", "-Wl,-z,relro",
                                 "-Wl,-z,now", "-Wp,-D_FORTIFY_SOURCE=3", "-Wp,-D_GLIBCXX_ASSERTIONS",
                                 "-Wl,-O1,--sort-common,--as-needed", "-Wl,-z,pack-relative-relocs", "-fcf-protection",
                                 "-fcf-protection=full", "-fno-plt", "-Wa,--noexecstack", "-static-libasan",
                                 "-stdlib=libstdc++", "-fopenmp=libgomp", "-ftemplate-backtrace-limit=0",
                                 "-fconcepts-diagnostics-depth=2", "-fbracket-depth=512", "-gz=zlib", "-Wl,-znow",
                                 "-Wl,-z,max-page-size=0x1000", "-Wl,-z,ibt,-z,shstk", "-Wl,--threads=4",
                                 "-Wl,--push-state,--as-needed,-lfoo,--pop-state", "-Wno-#pragma-messages",
                                 "-Xlinker", "-rpath", "-Xlinker", "/opt/lib", "-l:libfoo.a", "-march=native",
                                 "-D", "K=1", "-l", "m", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                                 "-grecord-gcc-switches", "-Wl,-export-dynamic", "-Wl,--gdb-index", "-Wl,--no-keep-memory",
                                 "-Wl,--allow-multiple-definition", "--param=ssp-buffer-size=4", "-flto-partition=one"},
                                cwd) == "");
}

TEST_CASE("CompilerInputs.the_prelude_is_precompiled_without_the_linkers_flags") {
  // A header's compile given a library or -Wl ran a link, which failed for want of main: the
  // prelude was never built for such flags, and every wrap compiled without it.
  CHECK(compile_flags({"-O2", "-DX=1", "-Wl,-O1", "-lm", "-l", "z", "-L/opt/lib", "-L", "/opt/lib", "-Xlinker", "-z",
                       "/opt/lib/libfoo.a", "/opt/lib/libbar.so.1", "-fuse-ld=gold", "-static-libstdc++",
                       "-I/opt/include", "-include", "/opt/include/k.hpp", "--for-linker=-O1"}) ==
        Names{"-O2", "-DX=1", "-I/opt/include", "-include", "/opt/include/k.hpp"});
}

TEST_CASE("CompilerInputs.a_record_of_what_a_build_read_holds_while_its_bytes_do") {
  using ferry::detail::changed_input;
  using ferry::detail::format_input_record;
  using ferry::detail::parse_input_record;
  using ferry::detail::record_inputs;
  support::TempDir root;
  const fs::path cache = root.path / "cache", inc = root.path / "inc";
  fs::create_directories(cache);
  fs::create_directories(inc);
  std::ofstream(inc / "k.hpp") << "#define K 10\n";
  std::ofstream(root.path / "a b\nc.hpp") << "// any byte in a name\n";
  // The build starts a second from now: both files were written before it.
  const auto started = std::chrono::system_clock::now() + std::chrono::seconds(1);
  // Names in the cache directory (the wrap's source, its temporary object) are the key's own.
  const Names listed = {(root.path / "a b\nc.hpp").string(), "inc/k.hpp", (cache / "wrap-x.cpp").string(),
                        (cache / "cc1.o").string()};
  const auto record = record_inputs(listed, root.path, cache, started);
  REQUIRE(record.files.size() == 2);
  CHECK(record.files[0].path == (root.path / "a b\nc.hpp").string());
  CHECK(record.files[1].path == (inc / "k.hpp").string());  // a relative name is the build directory's
  CHECK(record.files[1].key.size() == 64);

  SUBCASE("read back as written, and unchanged") {
    std::string_view rest;
    const std::string text = format_input_record(record) + "the compiler's words";
    const auto back = parse_input_record(text, &rest);
    REQUIRE(back);
    CHECK(rest == "the compiler's words");
    CHECK(format_input_record(*back) == format_input_record(record));
    CHECK(changed_input(*back).empty());
    // Cut, or an older cache's entry: not a record.
    CHECK_FALSE(parse_input_record(text.substr(0, text.size() / 2)));
    CHECK_FALSE(parse_input_record("0123abcd 12\n"));
  }
  SUBCASE("touched with the same bytes: the bytes decide") {
    fs::last_write_time(inc / "k.hpp", fs::file_time_type::clock::now() - std::chrono::hours(1));
    CHECK(changed_input(record).empty());
  }
  SUBCASE("the same size, other bytes, its modification time put back") {
    const auto mtime = fs::last_write_time(inc / "k.hpp");
    // Once the file system's clock has moved on (before Linux 6.13 a status change time has the
    // coarse clock's tick, and a write in the same tick would keep it).
    struct stat recorded {};
    REQUIRE(::stat((inc / "k.hpp").c_str(), &recorded) == 0);
    REQUIRE(support::wait_until([&] {
      std::ofstream(root.path / "probe") << "x";
      struct stat st {};
      return ::stat((root.path / "probe").c_str(), &st) == 0 &&
             (st.st_ctim.tv_sec != recorded.st_ctim.tv_sec || st.st_ctim.tv_nsec != recorded.st_ctim.tv_nsec);
    }));
    std::ofstream(inc / "k.hpp") << "#define K 20\n";
    fs::last_write_time(inc / "k.hpp", mtime);  // as `cp -p` or `rsync -t` leave it
    CHECK(contains(changed_input(record), (inc / "k.hpp").string() + " changed"));
  }
  SUBCASE("gone") {
    fs::remove(inc / "k.hpp");
    CHECK(contains(changed_input(record), "is gone"));
  }
  SUBCASE("a file whose status changed once the build had started is recorded as changed") {
    struct stat st {};
    REQUIRE(::stat((inc / "k.hpp").c_str(), &st) == 0);
    const auto changed = std::chrono::system_clock::time_point(std::chrono::seconds(st.st_ctim.tv_sec) +
                                                               std::chrono::nanoseconds(st.st_ctim.tv_nsec));
    const auto during = record_inputs({(inc / "k.hpp").string()}, root.path, cache, changed);
    REQUIRE(during.files.size() == 1);
    CHECK(during.files[0].key == "-");
    CHECK(contains(changed_input(during), "changed while the build read it"));
  }
}
