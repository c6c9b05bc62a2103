// SPDX-License-Identifier: BSD-3-Clause
#include "wrap/compiler_inputs.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>
#include <string_view>

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
  for (const auto& input : inputs) {
    if (!seen.insert(input).second) continue;
    // As listed: not normalised (`link/..` is where the link leads, then up; the trust walk
    // follows it so, as the compiler did).
    const fs::path path = resolved(input, cwd);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      // A temporary of the compiler's, gone: its directory is the scratch one (the same inode,
      // however either path is spelled).
      struct stat dir {};
      if (errno == ENOENT && have_scratch && path.has_filename() && ::stat(path.parent_path().c_str(), &dir) == 0 &&
          dir.st_dev == scratch_st.st_dev && dir.st_ino == scratch_st.st_ino)
        continue;
      return path.string() + " is listed as read but cannot be looked at (" + std::strerror(errno) +
             "): the list cannot be trusted";
    }
    if (std::string why = untrusted_reason(path); !why.empty()) return why;
  }
  return {};
}

namespace {

bool all_of_chars(std::string_view text, std::string_view allowed_extra) {
  for (char c : text)
    if (!std::isalnum(static_cast<unsigned char>(c)) && allowed_extra.find(c) == std::string_view::npos) return false;
  return true;
}

/// -f options with a value that ferry takes: none of them names a file that is read or a
/// program that is run.
constexpr std::string_view f_with_value[] = {
    "visibility=", "sanitize=", "no-sanitize=", "sanitize-recover=", "no-sanitize-recover=", "lto=",
    "fp-contract=", "excess-precision=", "cf-protection=", "diagnostics-color=", "message-length=",
    "template-depth=", "constexpr-depth=", "constexpr-steps=", "constexpr-loop-limit=",
    "constexpr-ops-limit=", "max-errors=", "debug-prefix-map=", "macro-prefix-map=", "file-prefix-map=",
    "tls-model=", "abi-version=", "vect-cost-model=", "simd-cost-model=", "inline-limit=", "align-functions=",
    "align-loops=", "align-jumps=", "align-labels=", "ffp-model=", "fp-model=", "openmp-version=",
    "stack-clash-protection=", "zero-call-used-regs=", "trivial-auto-var-init=", "strict-flex-arrays=",
    "math-errno=", "denormal-fp-math=", "ms-compatibility-version="};

/// -f options without a value that ferry refuses: they read compiled modules or precompiled
/// headers that no list names.
constexpr std::string_view f_refused[] = {"-fmodules", "-fmodules-ts", "-fmodule-header", "-fimplicit-modules",
                                          "-fimplicit-module-maps", "-fbuiltin-module-map", "-fpch-preprocess",
                                          "-fpch-deps", "-fprebuilt-implicit-modules", "-fmodules-search-all"};

/// Linker options ferry takes in -Wl, -Xlinker and --for-linker, alone or with one value
/// (`-z KEY`, `-rpath DIR`...).
constexpr std::string_view linker_alone[] = {
    "-O0", "-O1", "-O2", "-O3", "--as-needed", "--no-as-needed", "--gc-sections", "--no-gc-sections",
    "--no-undefined", "-Bsymbolic", "-Bsymbolic-functions", "-Bstatic", "-Bdynamic", "--build-id",
    "--enable-new-dtags", "--disable-new-dtags", "--strip-all", "--strip-debug", "-s", "-S", "--whole-archive",
    "--no-whole-archive", "--start-group", "--end-group", "--push-state", "--pop-state", "--warn-common",
    "--allow-shlib-undefined", "--no-allow-shlib-undefined", "-E", "--export-dynamic", "--icf=all", "--icf=none",
    "--icf=safe"};
constexpr std::string_view linker_valued[] = {"-z", "-rpath", "--exclude-libs", "--version-script", "-soname",
                                              "--hash-style", "--build-id", "--compress-debug-sections"};
/// The values `-z` may take.
constexpr std::string_view z_keywords[] = {"defs", "nodefs", "now", "lazy", "relro", "norelro", "noexecstack",
                                           "execstack", "text", "notext", "origin", "nodelete", "nodlopen",
                                           "combreloc", "nocombreloc", "separate-code", "noseparate-code",
                                           "muldefs", "global", "initfirst", "interpose"};

template <std::size_t N>
bool one_of(std::string_view s, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

}  // namespace

std::string untrusted_compiler_flag(const std::vector<std::string>& args, const fs::path& cwd, bool allow_unknown) {
  auto judged = [&](const std::string& flag, const fs::path& path) -> std::string {
    std::string why = untrusted_reason_if_present(resolved(path, cwd));
    return why.empty() ? why : "'" + flag + "': " + why;
  };
  auto unknown = [&](const std::string& flag) -> std::string {
    if (allow_unknown) return {};
    return "'" + flag +
           "' is not among the flags FERRY_WRAP takes: what each of those can make the compiler or linker "
           "read or run is judged, and nothing else is (FERRY_ALLOW_UNSAFE_PLUGINS=1 lets others through)";
  };
  // The value of `-opt value` or `-optvalue` at args[i] (i moves past a separate value);
  // nullopt when args[i] is not that option.
  auto value = [&](std::size_t& i, std::string_view opt) -> std::optional<std::string> {
    const std::string& a = args[i];
    if (a == opt) {
      if (i + 1 >= args.size()) return std::string();
      return args[++i];
    }
    if (a.starts_with(opt) && a.size() > opt.size()) return a.substr(opt.size());
    return std::nullopt;
  };
  std::vector<std::pair<std::string, std::string>> linker;  // (flag it came from, argument)
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const std::string_view v(a);
    std::string why;
    std::optional<std::string> arg;
    if ((arg = value(i, "-D")) || (arg = value(i, "-U")) || (arg = value(i, "-l"))) {
      continue;  // macros; a library by name (found through the directories judged, read as listed)
    } else if ((a == "-include" || a == "-imacros") && i + 1 < args.size()) {
      // Read and listed; ferry's prelude comes first, so no precompiled header replaces it. Only
      // with its file apart: "-includeX" would take "-include-pch" for "-include" "-pch".
      ++i;
      continue;
    } else if (std::optional<std::string> dir; (dir = value(i, "-isystem")) || (dir = value(i, "-iquote")) ||
                                               (dir = value(i, "-idirafter")) || (dir = value(i, "-I")) ||
                                               (dir = value(i, "-L")) || (dir = value(i, "--sysroot="))) {
      // Searched: judged as final directories (what others add there, a header or a precompiled
      // header beside one, would be used).
      why = judged(a + (a.size() <= 2 ? " " + *dir : ""), dir->empty() ? fs::path(".") : fs::path(*dir));
    } else if (v.starts_with("-std=") || v == "-w" || v == "-pedantic" || v == "-pedantic-errors" ||
               v == "-pthread" || v == "-pipe" || v == "-rdynamic" || v == "-s" || v == "-static-libstdc++" ||
               v == "-static-libgcc" || v == "-shared-libgcc" || v == "-fopenmp" || v == "-v") {
      continue;
    } else if (v.starts_with("-O") && all_of_chars(v.substr(2), "")) {
      continue;  // -O, -O2, -Os, -Ofast...
    } else if (v.starts_with("-g") && all_of_chars(v.substr(2), "-")) {
      continue;  // -g, -g3, -ggdb, -gdwarf-5...
    } else if (v.starts_with("-W") && v.size() > 2 && all_of_chars(v.substr(2), "-_=+")) {
      continue;  // warnings (not -Wl, -Wa, -Wp: those have a comma)
    } else if (v.starts_with("-m") && !v.starts_with("-mllvm") && !v.starts_with("-mlink") &&
               all_of_chars(v.substr(2), "-_=.,+")) {
      continue;  // the target machine
    } else if (v.starts_with("-f") && all_of_chars(v.substr(2), "-_+") && !one_of(v, f_refused)) {
      continue;  // on, off
    } else if (v.starts_with("-f") && v.find('=') != std::string_view::npos &&
               std::any_of(std::begin(f_with_value), std::end(f_with_value), [&](std::string_view p) {
                 return v.substr(2).starts_with(p) || v.substr(2).starts_with("no-" + std::string(p));
               })) {
      continue;
    } else if (v == "-fuse-ld=bfd" || v == "-fuse-ld=gold" || v == "-fuse-ld=lld" || v == "-fuse-ld=mold") {
      continue;  // found on the trusted PATH
    } else if (v.starts_with("-Wl,")) {
      std::string_view list = v.substr(4);
      for (std::size_t start = 0;;) {
        const std::size_t comma = list.find(',', start);
        linker.emplace_back(a, std::string(list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start)));
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
      continue;
    } else if (v == "-Xlinker" || v == "--for-linker" || v.starts_with("--for-linker=")) {
      linker.emplace_back(a, v.starts_with("--for-linker=") ? a.substr(13) : i + 1 < args.size() ? args[++i] : "");
      continue;
    } else if (!v.starts_with("-") && (v.ends_with(".a") || v.ends_with(".so") || v.ends_with(".o") ||
                                        v.find(".so.") != std::string_view::npos)) {
      continue;  // an object or library to link: read and listed by the linker
    } else {
      why = unknown(a);
    }
    if (!why.empty()) return why;
  }
  // The linker's own arguments, however they were split between -Wl, -Xlinker and --for-linker.
  for (std::size_t k = 0; k < linker.size(); ++k) {
    const auto& [flag, piece] = linker[k];
    if (one_of(piece, linker_alone)) continue;
    const auto eq = piece.find('=');
    const std::string name = piece.substr(0, eq);
    if (!one_of(name, linker_valued) || (eq == std::string::npos && k + 1 >= linker.size())) {
      if (std::string why = unknown(flag + " (" + piece + ")"); !why.empty()) return why;
      continue;
    }
    const std::string given = eq == std::string::npos ? linker[++k].second : piece.substr(eq + 1);
    if (name == "-z" && !one_of(given, z_keywords))
      if (std::string why = unknown(flag + " (-z " + given + ")"); !why.empty()) return why;
    // A version script is read and listed; a runpath is the wrap plugin's own, judged where it is
    // submitted as any plugin's is; --exclude-libs takes names.
  }
  return {};
}

}  // namespace ferry::detail
