// SPDX-License-Identifier: BSD-3-Clause
#include "wrap/compiler_inputs.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <charconv>
#include <cstring>
#include <regex>
#include <set>
#include <string_view>

#include "platform/hash.hpp"
#include "platform/trust.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

namespace {

bool space(char c) { return c == ' ' || c == '\t'; }

/// `name` as a dependency file escapes it (gcc, clang, lld): a space or `#` after a backslash,
/// `$` doubled.
std::string escaped(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == ' ' || c == '#') out += '\\';
    if (c == '$') out += '$';
    out += c;
  }
  return out;
}

std::string unescaped(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char next = i + 1 < name.size() ? name[i + 1] : '\0';
    if ((name[i] == '\\' && (next == ' ' || next == '#')) || (name[i] == '$' && next == '$')) ++i;
    out += name[i];
  }
  return out;
}

fs::path resolved(const fs::path& p, const fs::path& cwd) { return p.is_absolute() ? p : cwd / p; }

}  // namespace

std::optional<std::vector<std::string>> compiler_list_inputs(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  bool target_done = false;
  std::size_t i = 0;
  auto flush = [&] {
    if (!word.empty() && target_done) out.push_back(word);
    word.clear();
  };
  for (; i < text.size(); ++i) {
    const char c = text[i];
    const char next = i + 1 < text.size() ? text[i + 1] : '\0';
    if (c == '\\' && next == '\n') {
      flush();
      ++i;
    } else if (c == '\\' && (next == ' ' || next == '#')) {
      word += next;
      ++i;
    } else if (c == '$' && next == '$') {
      word += '$';
      ++i;
    } else if (c == ':' && !target_done && (space(next) || next == '\n' || next == '\0')) {
      word.clear();  // the target (the compiler's output)
      target_done = true;
    } else if (c == '\n') {
      break;  // the end of the rule
    } else if (space(c)) {
      flush();
    } else {
      word += c;
    }
  }
  flush();
  if (!target_done) return std::nullopt;
  for (; i < text.size(); ++i)
    if (!space(text[i]) && text[i] != '\n') return std::nullopt;  // another rule, or a broken name
  return out;
}

std::optional<std::vector<std::string>> linker_list_inputs(const std::string& text, const std::string& output) {
  // The head: the output as written (GNU ld, gold) or escaped (lld), then a colon.
  std::size_t at = 0;
  for (const std::string& head : {output + ":", escaped(output) + ":"})
    if (text.starts_with(head)) {
      at = head.size();
      break;
    }
  if (at == 0) return std::nullopt;
  static constexpr std::string_view more = " \\\n";
  std::vector<std::string> raw;
  std::size_t indent = 0;
  while (text.compare(at, more.size(), more) == 0) {
    at += more.size();
    std::size_t spaces = 0;
    while (at + spaces < text.size() && text[at + spaces] == ' ') ++spaces;
    if (indent == 0) indent = spaces;
    if (spaces != indent || (indent != 1 && indent != 2)) return std::nullopt;
    at += spaces;
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) return std::nullopt;
    // The name runs to the next " \\\n", or to the end of the rule's line.
    std::size_t cont = text.find(more, at);
    if (cont != std::string::npos && cont < end) end = cont;
    raw.emplace_back(text.substr(at, end - at));
    at = end;
  }
  // The rest must be exactly the end of the rule and an empty rule per input, in order.
  std::string rest = "\n";
  for (const auto& r : raw) rest += "\n" + r + ":\n";
  if (text.compare(at, std::string::npos, rest) != 0) return std::nullopt;
  std::vector<std::string> out;
  for (const auto& r : raw) out.push_back(indent == 1 ? unescaped(r) : r);
  return out;
}

std::string untrusted_input(const std::vector<std::string>& inputs, const fs::path& cwd, const fs::path& scratch) {
  if (inputs.empty()) return "the list of what was read is empty";
  struct stat scratch_st {};
  const bool have_scratch = ::stat(scratch.c_str(), &scratch_st) == 0;
  std::set<std::string> seen;
  int temporaries = 0;
  for (const auto& input : inputs) {
    if (!seen.insert(input).second) continue;
    // As listed: not normalised (`link/..` is where the link leads, then up; the trust walk
    // follows it so, as the compiler did).
    const fs::path path = resolved(input, cwd);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      // A temporary of the compiler's, gone: its directory is the scratch one (the same inode,
      // however either path is spelled). One: the wrap's own object; a second is a source file
      // the compiler took from among the flags, whose headers no list kept (-MF holds the last
      // compile's).
      struct stat dir {};
      if (errno == ENOENT && have_scratch && path.has_filename() && ::stat(path.parent_path().c_str(), &dir) == 0 &&
          dir.st_dev == scratch_st.st_dev && dir.st_ino == scratch_st.st_ino) {
        if (++temporaries > 1) return "the compiler compiled more than the wrap's own source (" + path.string() + ")";
        continue;
      }
      return path.string() + " is listed as read but cannot be looked at (" + std::strerror(errno) +
             "): the list cannot be trusted";
    }
    if (std::string why = untrusted_reason(path); !why.empty()) return why;
    // A thin archive names its members by path, and GNU ld and lld read them without listing them
    // (through a link to one too).
    if (struct stat target {}; ::stat(path.c_str(), &target) == 0 && S_ISREG(target.st_mode)) {
      char magic[8] = {};
      if (FILE* f = std::fopen(path.c_str(), "rb")) {
        const std::size_t n = std::fread(magic, 1, sizeof magic, f);
        std::fclose(f);
        if (n == sizeof magic && std::memcmp(magic, "!<thin>\n", 8) == 0)
          return path.string() + " is a thin archive: the linker reads its members without listing them";
      }
    }
  }
  return {};
}

namespace {

/// -f options with a value that ferry takes: none of them names a file that is read or a
/// program that is run.
constexpr std::string_view f_with_value[] = {
    "visibility=", "sanitize=", "sanitize-recover=", "lto=", "fp-contract=", "excess-precision=", "cf-protection=",
    "diagnostics-color=", "message-length=", "template-depth=", "template-backtrace-limit=",
    "macro-backtrace-limit=", "concepts-diagnostics-depth=", "bracket-depth=", "constexpr-depth=",
    "constexpr-steps=", "constexpr-loop-limit=", "constexpr-ops-limit=", "max-errors=", "debug-prefix-map=",
    "macro-prefix-map=", "file-prefix-map=", "tls-model=", "abi-version=", "vect-cost-model=", "simd-cost-model=",
    "inline-limit=", "align-functions=", "align-loops=", "align-jumps=", "align-labels=", "fp-model=",
    "openmp=", "openmp-version=", "stack-clash-protection=", "zero-call-used-regs=", "trivial-auto-var-init=",
    "strict-flex-arrays=", "math-errno=", "denormal-fp-math=", "ms-compatibility-version=", "lto-partition="};

/// -f switches (with or without no-) that ferry refuses: they read compiled modules, precompiled
/// headers or profiles that no list names, load plugins, or write into the current directory.
constexpr std::string_view f_refused[] = {"module", "implicit-module", "builtin-module-map", "pch-", "prebuilt-",
                                          "profile", "auto-profile", "create-profile", "cs-profile",
                                          "memory-profile", "save-optimization-record", "plugin", "pass-plugin",
                                          "crash-diagnostics", "sanitize-ignorelist", "sanitize-blacklist",
                                          "xray", "dump", "callgraph-info", "opt-info", "record-command-line",
                                          // these take the next argument as their value (a path the
                                          // allowlist took for a value of its own is then compiled)
                                          "debug-compilation-dir", "trapv-handler", "ilelist",
                                          "intrinsic-modules-path",
                                          // clang writes <cwd>/<output>.gcno, following a link
                                          "test-coverage", "coverage"};

/// Linker options ferry takes alone, and those with one value (`-z KEY`, `-rpath DIR`: in the same
/// -Wl, argument, after `=`, or in the -Xlinker right after).
constexpr std::string_view linker_alone[] = {
    "-O0", "-O1", "-O2", "-O3", "--as-needed", "--no-as-needed", "--gc-sections", "--no-gc-sections",
    "--no-undefined", "-Bsymbolic", "-Bsymbolic-functions", "-Bstatic", "-Bdynamic", "--build-id",
    "--enable-new-dtags", "--disable-new-dtags", "--strip-all", "--strip-debug", "-s", "-S", "--whole-archive",
    "--no-whole-archive", "--start-group", "--end-group", "--push-state", "--pop-state", "--warn-common",
    "--allow-shlib-undefined", "--no-allow-shlib-undefined", "-E", "--export-dynamic", "-export-dynamic",
    "--sort-common", "--threads", "--no-threads", "--relax", "--no-relax", "--gdb-index", "--no-keep-memory",
    "--allow-multiple-definition"};
constexpr std::string_view linker_valued[] = {"-z", "-rpath", "--exclude-libs", "--version-script", "-soname",
                                              "--hash-style", "--build-id", "--compress-debug-sections",
                                              "--threads", "--sort-section", "--icf", "--sort-common"};
/// The values `-z` may take (`max-page-size=N` and the like: those names with a number).
constexpr std::string_view z_keywords[] = {
    "defs", "nodefs", "now", "lazy", "relro", "norelro", "noexecstack", "execstack", "text", "notext", "origin",
    "nodelete", "nodlopen", "combreloc", "nocombreloc", "separate-code", "noseparate-code", "muldefs", "global",
    "initfirst", "interpose", "pack-relative-relocs", "nopack-relative-relocs", "ibt", "shstk", "ibtplt"};
constexpr std::string_view z_numbered[] = {"max-page-size=", "common-page-size=", "stack-size="};

/// Whether `path` has a `..` component (lld lists such a path resolved, not as it read it).
bool has_dot_dot(std::string_view path) {
  for (const auto& part : fs::path(path))
    if (part == "..") return true;
  return false;
}

template <std::size_t N>
bool one_of(std::string_view s, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

bool matches(std::string_view s, const char* pattern) {
  return std::regex_match(s.begin(), s.end(), std::regex(pattern));
}

/// `-Dname...` or `-Uname`: a macro, joined.
bool macro_flag(std::string_view a) { return matches(a, "-[DU][A-Za-z_].*"); }

/// `-lname` (or `-l:file`): a library by name, found through the directories judged and read as
/// listed; not gold's and lld's `-library-path`, nor a name with `..` (lld lists it resolved).
bool library_name_flag(std::string_view a) {
  return matches(a, "-l[A-Za-z0-9_.+:-]+") && !a.starts_with("-library") && a.find("..") == std::string_view::npos;
}

/// A file to link (an object or library, `.a`, `.o`, `.so`, `.so.N`), named by its path.
bool link_input(std::string_view a) {
  return !a.starts_with("-") && !a.starts_with("@") && matches(a, ".*\\.(a|o|so)(\\.[0-9]+)*");
}

/// Whether the linker option `piece` is one ferry takes; `next` is what follows it in the same
/// argument (or the -Xlinker right after), taken as its value when it needs one (`used`).
bool linker_piece_taken(std::string_view piece, const std::optional<std::string>& next, bool& used) {
  used = false;
  if (one_of(piece, linker_alone)) return true;
  if (library_name_flag(piece)) return true;
  auto z_taken = [](std::string_view key) {
    return one_of(key, z_keywords) || std::any_of(std::begin(z_numbered), std::end(z_numbered), [&](std::string_view p) {
             return key.starts_with(p) && matches(key.substr(p.size()), "(0x)?[0-9a-fA-F]+");
           });
  };
  if (piece.starts_with("-z") && piece.size() > 2) return z_taken(piece.substr(2));  // -znow
  const auto eq = piece.find('=');
  const std::string_view name = piece.substr(0, eq);
  if (!one_of(name, linker_valued)) return false;
  std::string value;
  if (eq != std::string_view::npos) {
    value = std::string(piece.substr(eq + 1));
  } else {
    if (!next || next->starts_with("-")) return false;
    value = *next;
    used = true;
  }
  // A linker argument of its own that starts with '@' is a file of more arguments to collect2
  // and the linkers (`-Wl,-rpath,@FILE`).
  if (used && value.starts_with("@")) return false;
  if (name == "-z") return z_taken(value);
  // A version script is read and listed (and judged by the caller: its `..` refused here, as lld
  // lists it resolved); a runpath is the wrap plugin's own, judged where it is submitted as any
  // plugin's is; --exclude-libs takes names.
  return name != "--version-script" || !has_dot_dot(value);
}

/// The file of a `--version-script` linker option (`piece`, its value in it or in `next`), if it
/// is one.
std::optional<std::string> version_script(std::string_view piece, const std::optional<std::string>& next) {
  if (piece.starts_with("--version-script=")) return std::string(piece.substr(17));
  if (piece == "--version-script" && next) return *next;
  return std::nullopt;
}

/// `list` split at its commas.
std::vector<std::string> pieces_of(std::string_view list) {
  std::vector<std::string> out;
  for (std::size_t start = 0;;) {
    const std::size_t comma = list.find(',', start);
    out.emplace_back(list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

std::string untrusted_compiler_flag(const std::vector<std::string>& args, const fs::path& cwd, bool allow_unknown,
                                    bool* names_relative) {
  auto judged = [&](const std::string& flag, const fs::path& path) -> std::string {
    if (names_relative && path.is_relative()) *names_relative = true;
    std::string why = untrusted_reason_if_present(resolved(path, cwd));
    return why.empty() ? why : "'" + flag + "': " + why;
  };
  auto unknown = [&](const std::string& flag) -> std::string {
    if (allow_unknown) {
      if (names_relative) *names_relative = true;  // whatever it names, relative paths maybe
      return {};
    }
    return "'" + flag +
           "' is not among the flags FERRY_WRAP takes: what each of those can make the compiler or linker "
           "read or run is judged, and nothing else is (FERRY_ALLOW_UNSAFE_PLUGINS=1 lets others through)";
  };
  // A value given apart: never one that starts with '-', which the compiler takes for a flag, nor
  // with '@', which the compiler, collect2 and the linkers read as a file of more arguments.
  auto separate = [&](std::size_t& i) -> std::optional<std::string> {
    if (i + 1 < args.size() && !args[i + 1].starts_with("-") && !args[i + 1].starts_with("@")) return args[++i];
    return std::nullopt;
  };
  constexpr std::string_view alone[] = {
      "-w", "-pedantic", "-pedantic-errors", "-pthread", "-pipe", "-rdynamic", "-s", "-static-libstdc++",
      "-static-libgcc", "-shared-libgcc", "-static-libasan", "-static-libubsan", "-static-libtsan",
      "-static-liblsan", "-fopenmp", "-v", "-fuse-ld=bfd", "-fuse-ld=gold", "-fuse-ld=lld", "-fuse-ld=mold"};
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const std::string_view v(a);
    std::string why;
    if (v == "-D" || v == "-U" || v == "-l" || v == "-include") {
      // A macro; a library by name (found through the directories judged, read as listed); a
      // header read first (listed; ferry's prelude is the first -include, so no precompiled
      // header stands in for it, and judged now too). Only with its value apart: "-includeX"
      // would take "-include-pch" for "-include" "-pch".
      const auto value = separate(i);
      if (!value || (v != "-D" && v != "-U" && has_dot_dot(*value))) return unknown(a + " " + value.value_or(""));
      if (v == "-include")
        if (std::string w = judged(a + " " + *value, *value); !w.empty()) return w;
      continue;
    }
    if (macro_flag(v) || library_name_flag(v)) continue;
    bool dir_option = false;
    for (std::string_view opt : {"-isystem", "-iquote", "-idirafter", "-I", "-L"}) {
      if (!v.starts_with(opt)) continue;
      std::optional<std::string> dir;
      if (v == opt) {
        dir = separate(i);
      } else if (const std::string_view rest = v.substr(opt.size()); !rest.starts_with("-") && !rest.starts_with("=")) {
        dir = std::string(rest);  // not `-isystem-after`, nor a sysroot-relative `-I=`
      }
      if (!dir) return unknown(a);
      // Searched: judged as final directories (what others add there, a header or a precompiled
      // header beside one, would be used).
      why = judged(v == opt ? a + " " + *dir : a, *dir);
      dir_option = true;
      break;
    }
    if (dir_option) {
      if (!why.empty()) return why;
      continue;
    }
    if (one_of(v, alone) || matches(v, "-std=[a-z0-9+]+") || v == "-stdlib=libc++" || v == "-stdlib=libstdc++" ||
        matches(v, "-O([0-3sgz]|fast)?") ||
        matches(v, "-g([0-3]|gdb[0-3]?|dwarf(-[2-5])?|z(=(none|zlib|zlib-gnu|zstd))?|line-tables-only|"
                   "(no-)?column-info|(no-)?pubnames|(no-)?record-gcc-switches|(no-)?record-command-line|(no-)?strict-dwarf)?") ||
        matches(v, "-W[A-Za-z0-9#_+=-]+") ||  // warnings: no comma (not -Wl, -Wa, -Wp)
        matches(v, "--param=[a-z0-9_-]+=[0-9]+")) {
      continue;
    }
    if (matches(v, "-m(no-)?[a-z0-9][a-z0-9_.+-]*(=[A-Za-z0-9_.,+-]+)?") && !v.starts_with("-mllvm") &&
        !v.starts_with("-mlink") && !v.starts_with("-module")) {
      continue;  // the target machine
    }
    if (v.starts_with("-f")) {
      std::string_view name = v.substr(2);
      if (name.starts_with("no-")) name.remove_prefix(3);
      const bool refused = std::any_of(std::begin(f_refused), std::end(f_refused),
                                       [&](std::string_view p) { return name.starts_with(p); });
      if (!refused && matches(name, "[A-Za-z0-9_+-]+")) continue;  // a switch
      if (!refused && std::any_of(std::begin(f_with_value), std::end(f_with_value),
                                  [&](std::string_view p) { return name.starts_with(p); }))
        continue;
      return unknown(a);
    }
    if (v.starts_with("-Wp,") || v.starts_with("-Wa,")) {
      // The preprocessor's macros (-Wp,-D_FORTIFY_SOURCE=2, as distributions pass them) and the
      // assembler's --noexecstack: nothing else.
      const bool preprocessor = v[2] == 'p';
      for (const auto& piece : pieces_of(v.substr(4)))
        if (preprocessor ? !macro_flag(piece) : piece != "--noexecstack") return unknown(a);
      continue;
    }
    if (v.starts_with("-Wl,")) {
      const std::vector<std::string> pieces = pieces_of(v.substr(4));
      for (std::size_t k = 0; k < pieces.size(); ++k) {
        bool used = false;
        std::optional<std::string> next = k + 1 < pieces.size() ? std::optional<std::string>(pieces[k + 1]) : std::nullopt;
        if (!linker_piece_taken(pieces[k], next, used)) {
          if (std::string w = unknown(a + " (" + pieces[k] + ")"); !w.empty()) return w;
        } else if (auto script = version_script(pieces[k], next)) {
          if (std::string w = judged(a, *script); !w.empty()) return w;
        }
        k += used;
      }
      continue;
    }
    if (v == "-Xlinker" || v == "--for-linker" || v.starts_with("--for-linker=")) {
      std::string piece;
      if (v.starts_with("--for-linker=")) {
        piece = a.substr(13);
      } else if (i + 1 < args.size()) {
        piece = args[++i];
      } else {
        return unknown(a);
      }
      // A value only in the -Xlinker (or --for-linker) right after.
      std::optional<std::string> next;
      if (i + 2 < args.size() && args[i + 1] == "-Xlinker") next = args[i + 2];
      else if (i + 1 < args.size() && args[i + 1].starts_with("--for-linker=")) next = args[i + 1].substr(13);
      bool used = false;
      if (!linker_piece_taken(piece, next, used)) {
        if (std::string w = unknown(a + " " + piece); !w.empty()) return w;
      } else if (auto script = version_script(piece, next)) {
        if (std::string w = judged(a + " " + piece, *script); !w.empty()) return w;
      }
      if (used) i += args[i + 1] == "-Xlinker" ? 2 : 1;
      continue;
    }
    if (link_input(v)) {
      // An object or library to link: read and listed by the linker, and judged now as well (lld
      // lists `link/../lib/x.o` as `lib/x.o`, which is not the file it read: no `..` either).
      if (has_dot_dot(v)) return unknown(a);
      if (std::string w = judged(a, a); !w.empty()) return w;
      continue;
    }
    if (std::string w = unknown(a); !w.empty()) return w;
  }
  return {};
}

std::vector<std::string> compile_flags(const std::vector<std::string>& flags) {
  constexpr std::string_view link_only[] = {"-rdynamic", "-s", "-static-libstdc++", "-static-libgcc", "-shared-libgcc",
                                            "-static-libasan", "-static-libubsan", "-static-libtsan", "-static-liblsan"};
  std::vector<std::string> out;
  for (std::size_t i = 0; i < flags.size(); ++i) {
    const std::string_view v(flags[i]);
    if (v == "-Xlinker" || v == "--for-linker" || v == "-l" || v == "-L") {
      ++i;  // and its value
      continue;
    }
    if (v.starts_with("-Wl,") || v.starts_with("--for-linker=") || v.starts_with("-l") || v.starts_with("-L") ||
        v.starts_with("-fuse-ld=") || one_of(v, link_only) ||
        link_input(v))
      continue;
    out.push_back(flags[i]);
  }
  return out;
}

// ---- what a build read, remembered with its cache entry -----------------------------------------

namespace {

std::int64_t nanoseconds(const struct timespec& t) { return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

bool same_inode(const fs::path& dir, const struct stat& of) {
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && st.st_dev == of.st_dev && st.st_ino == of.st_ino;
}

constexpr std::string_view record_head = "ferry-wrap-inputs 1 ";
constexpr std::size_t max_recorded_files = 100'000;
constexpr std::size_t max_recorded_name = 4096;

/// Reads a decimal number and the one space or newline after it.
template <class T>
bool number(std::string_view& text, T& out, char after) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec != std::errc() || end == text.data() || end == text.data() + text.size() || *end != after) return false;
  text.remove_prefix(static_cast<std::size_t>(end - text.data()) + 1);
  return true;
}

/// Reads "<length> <bytes>\n".
bool name(std::string_view& text, std::string& out) {
  std::size_t n = 0;
  if (!number(text, n, ' ') || n > max_recorded_name || text.size() < n + 1 || text[n] != '\n') return false;
  out.assign(text.substr(0, n));
  text.remove_prefix(n + 1);
  return true;
}

}  // namespace

InputRecord record_inputs(const std::vector<std::string>& inputs, const fs::path& cwd, const fs::path& scratch,
                          std::chrono::system_clock::time_point started) {
  InputRecord out;
  struct stat scratch_st {};
  const bool have_scratch = ::stat(scratch.c_str(), &scratch_st) == 0;
  const std::int64_t recent =
      std::chrono::duration_cast<std::chrono::nanoseconds>(started.time_since_epoch() - std::chrono::milliseconds(100)).count();
  std::set<std::string> seen;
  for (const auto& input : inputs) {
    const fs::path path = resolved(input, cwd);
    if (have_scratch && path.has_parent_path() && same_inode(path.parent_path(), scratch_st)) continue;
    if (!seen.insert(path.string()).second) continue;
    RecordedInput r{path.string(), 0, 0, 0, "-"};
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      r.size = static_cast<std::uint64_t>(st.st_size);
      r.mtime_ns = nanoseconds(st.st_mtim);
      r.ctime_ns = nanoseconds(st.st_ctim);
      // Its status changes with every write, and no program sets it (a copy that keeps the
      // modification time, an archive unpacked, `touch -d`): one from before the build started
      // means the bytes hashed now are those the build read.
      if (r.ctime_ns < recent) r.key = file_content_key(path).value_or("-");
    }
    out.files.push_back(std::move(r));
  }
  return out;
}

std::string format_input_record(const InputRecord& record) {
  std::string out = std::string(record_head) + std::to_string(record.files.size()) + "\n";
  for (const auto& f : record.files)
    out += std::to_string(f.size) + " " + std::to_string(f.mtime_ns) + " " + std::to_string(f.ctime_ns) + " " + f.key +
           " " + std::to_string(f.path.size()) + " " + f.path + "\n";
  return out;
}

std::optional<InputRecord> parse_input_record(std::string_view text, std::string_view* rest) {
  if (!text.starts_with(record_head)) return std::nullopt;
  text.remove_prefix(record_head.size());
  std::size_t count = 0;
  InputRecord out;
  if (!number(text, count, '\n') || count > max_recorded_files) return std::nullopt;
  for (std::size_t i = 0; i < count; ++i) {
    RecordedInput f;
    if (!number(text, f.size, ' ') || !number(text, f.mtime_ns, ' ') || !number(text, f.ctime_ns, ' '))
      return std::nullopt;
    const std::size_t space = text.find(' ');
    if (space == std::string_view::npos || space == 0 || space > 128) return std::nullopt;
    f.key.assign(text.substr(0, space));
    text.remove_prefix(space + 1);
    if (!name(text, f.path) || !fs::path(f.path).is_absolute()) return std::nullopt;
    out.files.push_back(std::move(f));
  }
  if (rest) *rest = text;
  return out;
}

std::string changed_input(const InputRecord& record) {
  for (const auto& f : record.files) {
    if (f.key == "-") return f.path + " changed while the build read it";
    struct stat st {};
    if (::stat(f.path.c_str(), &st) != 0) return f.path + " is gone (" + std::strerror(errno) + ")";
    if (static_cast<std::uint64_t>(st.st_size) == f.size && nanoseconds(st.st_mtim) == f.mtime_ns &&
        nanoseconds(st.st_ctim) == f.ctime_ns)
      continue;
    // Touched, checked out again, copied: the bytes decide.
    if (file_content_key(f.path) != f.key) return f.path + " changed";
  }
  return {};
}

}  // namespace ferry::detail
