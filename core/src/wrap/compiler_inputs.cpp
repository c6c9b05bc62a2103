// SPDX-License-Identifier: BSD-3-Clause
#include "wrap/compiler_inputs.hpp"

#include <sys/stat.h>

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
  std::set<std::string> seen;
  for (const auto& input : inputs) {
    if (!seen.insert(input).second) continue;
    const fs::path path = resolved(input, cwd).lexically_normal();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT && path.parent_path() == scratch.lexically_normal()) continue;  // a temporary
      return path.string() + " is listed as read but cannot be looked at (" + std::strerror(errno) +
             "): the list cannot be trusted";
    }
    if (std::string why = untrusted_reason(path); !why.empty()) return why;
  }
  return {};
}

std::string untrusted_compiler_flag(const std::vector<std::string>& args, const fs::path& cwd) {
  auto judged = [&](const std::string& flag, const fs::path& path) -> std::string {
    std::string why = untrusted_reason_if_present(resolved(path, cwd));
    return why.empty() ? why : "'" + flag + "': " + why;
  };
  auto refused = [](const std::string& flag, const char* because) { return "'" + flag + "' is refused: " + because; };
  // A prefix of programs' names (and of a specs file's): a directory when it ends in '/' or
  // names one (gcc adds the '/' then), else its directory (a bare name: the current directory).
  auto prefix_dir = [&](const std::string& prefix) {
    std::error_code ec;
    if (prefix.ends_with('/') || fs::is_directory(resolved(prefix, cwd), ec)) return fs::path(prefix);
    return fs::path(prefix).parent_path() / "";
  };
  auto has_slash = [](const std::string& s) { return s.find('/') != std::string::npos; };
  // The value of `-opt=value`, `-optvalue` or `-opt value` at args[i] (i moves past a separate
  // value); nullopt when args[i] is not that option.
  auto value = [&](std::size_t& i, std::string_view opt, bool joined) -> std::optional<std::string> {
    const std::string& a = args[i];
    if (a == opt) {
      if (i + 1 >= args.size()) return std::string();
      return args[++i];
    }
    if (a.starts_with(std::string(opt) + "=")) return a.substr(opt.size() + 1);
    if (joined && a.starts_with(opt) && a.size() > opt.size()) return a.substr(opt.size());
    return std::nullopt;
  };
  std::vector<std::pair<std::string, std::string>> linker;  // (flag it came from, argument)
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    std::string why;
    if (a.starts_with("@")) return refused(a, "a response file (more options, unjudged)");
    if (a == "-Xclang" || a.starts_with("-Xclang=")) return refused(a, "it reaches the compiler's internal options, which load code");
    if (a.starts_with("--config")) return refused(a, "a configuration file (more options, unjudged)");
    if (a.starts_with("-iplugindir")) return refused(a, "a directory of compiler plugins");
    if (a.starts_with("-fmodule-mapper")) return refused(a, "a module mapper can run a program");
    if (a.starts_with("-save-temps")) return refused(a, "intermediate files in a shared directory could be swapped");
    if (a.starts_with("-M") || a.starts_with("--dependency-file") || a.starts_with("--write-dependencies") ||
        a.starts_with("--user-dependencies"))
      return refused(a, "ferry asks for the lists of what was read itself");
    if (a.starts_with("-Wl,") || a.starts_with("-Wa,") || a.starts_with("-Wp,")) {
      std::string_view list = std::string_view(a).substr(4);
      for (std::size_t start = 0;;) {
        const std::size_t comma = list.find(',', start);
        std::string piece(list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
        if (piece.starts_with("@")) return refused(a, "a response file (more options, unjudged)");
        if (a[2] == 'p' && (piece.starts_with("-M") || piece.starts_with("-include") || piece.starts_with("-imacros")))
          return refused(a, "preprocessor options ferry does not judge");
        if (a[2] == 'l') linker.emplace_back(a, piece);
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
      continue;
    }
    if (a == "-Xlinker" || a == "-Xassembler" || a == "-Xpreprocessor" || a == "--for-linker" ||
        a.starts_with("--for-linker=")) {
      std::string piece = a.starts_with("--for-linker=") ? a.substr(13) : i + 1 < args.size() ? args[++i] : "";
      if (piece.starts_with("@")) return refused(a + " " + piece, "a response file (more options, unjudged)");
      if (a == "-Xpreprocessor") return refused(a + " " + piece, "preprocessor options ferry does not judge");
      if (a != "-Xassembler") linker.emplace_back(a, piece);
      continue;
    }
    if (auto prefix = value(i, "-B", true)) {
      why = judged("-B" + *prefix, prefix_dir(*prefix));
    } else if (auto long_prefix = value(i, "--prefix", false)) {
      why = judged("--prefix " + *long_prefix, prefix_dir(*long_prefix));
    } else if (a.starts_with("-fplugin=") || a.starts_with("-fpass-plugin=")) {
      const std::string path = a.substr(a.find('=') + 1);
      if (has_slash(path)) why = judged(a, path);  // else in the compiler's own plugin directory
    } else if (auto specs = value(i, "-specs", false)) {
      why = judged("-specs=" + *specs, *specs);  // a bare name is looked for in the current directory first
    } else if (auto long_specs = value(i, "--specs", false)) {
      why = judged("--specs=" + *long_specs, *long_specs);
    } else if (a == "-wrapper" && i + 1 < args.size()) {
      ++i;
      const std::string program = args[i].substr(0, args[i].find(','));
      if (has_slash(program)) why = judged(a + " " + args[i], program);  // else on the trusted PATH
    } else if (a.starts_with("-fuse-ld=")) {
      if (has_slash(a.substr(9))) why = judged(a, a.substr(9));
    } else if (auto ld = value(i, "--ld-path", false)) {
      why = judged("--ld-path=" + *ld, *ld);
    } else {
      // Directories the compiler searches, judged as final ones: what others add there (a
      // header, a precompiled header beside one) would be used.
      for (auto [opt, joined] : {std::pair{"-I", true}, {"--include-directory", false}, {"-iquote", true},
                                 {"-isystem", true}, {"-idirafter", true}, {"--sysroot", false},
                                 {"-isysroot", true}, {"--gcc-toolchain", false}, {"-resource-dir", false}}) {
        std::size_t j = i;
        if (auto dir = value(j, opt, joined)) {
          i = j;
          why = judged(std::string(opt) + " " + *dir, dir->empty() ? fs::path(".") : fs::path(*dir));
          break;
        }
      }
    }
    if (!why.empty()) return why;
  }
  // The linker's own arguments, however they were split between -Wl, -Xlinker and --for-linker.
  for (std::size_t k = 0; k < linker.size(); ++k) {
    const auto& [flag, piece] = linker[k];
    if (piece.starts_with("--dependency-file")) return refused(flag, "ferry asks for the linker's list itself");
    std::optional<std::string> plugin;
    if ((piece == "-plugin" || piece == "--plugin") && k + 1 < linker.size()) plugin = linker[k + 1].second;
    if (piece.starts_with("-plugin=") || piece.starts_with("--plugin=")) plugin = piece.substr(piece.find('=') + 1);
    if (plugin)
      if (std::string why = judged(flag + " (a linker plugin)", *plugin); !why.empty()) return why;
  }
  return {};
}

}  // namespace ferry::detail
