// SPDX-License-Identifier: BSD-3-Clause
// Symbolizing a worker's stack in the host with libdwfl: each module of the stack's maps lines is
// reported at the address the worker loaded it, then each address is looked up (symbol table for
// the function, DWARF line table for file:line).
#include "platform/symbolize.hpp"

#include "platform/fd.hpp"
#include "platform/format.hpp"
#include "platform/trust.hpp"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ferry::detail {

namespace {

/// Hex digits at `s[i]...` into `v`; false if there are none or too many for 64 bits.
bool hex(std::string_view s, std::size_t& i, std::uint64_t& v) noexcept {
  std::size_t begin = i;
  v = 0;
  for (; i < s.size(); ++i) {
    char c = s[i];
    unsigned d;
    if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
    else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
    else break;
    if (i - begin >= 16) return false;
    v = (v << 4) | d;
  }
  return i > begin;
}

bool expect(std::string_view s, std::size_t& i, char c) noexcept {
  if (i >= s.size() || s[i] != c) return false;
  ++i;
  return true;
}

bool skip_spaces(std::string_view s, std::size_t& i) noexcept {
  std::size_t begin = i;
  while (i < s.size() && s[i] == ' ') ++i;
  return i > begin;
}

bool holds_any(const MapsLine& m, const std::uint64_t* pcs, std::size_t count) noexcept {
  for (std::size_t k = 0; k < count; ++k)
    if (pcs[k] >= m.start && pcs[k] < m.end) return true;
  return false;
}

}  // namespace

bool parse_maps_line(std::string_view s, MapsLine& out) noexcept {
  // 7f2c1a000000-7f2c1a022000 r--p 00000000 08:01 1234567      /usr/lib/x86_64-linux-gnu/libc.so.6
  std::size_t i = 0;
  if (!hex(s, i, out.start) || !expect(s, i, '-') || !hex(s, i, out.end) || !expect(s, i, ' '))
    return false;
  if (out.start >= out.end || s.size() < i + 5) return false;
  for (int k = 0; k < 4; ++k, ++i)
    if (s[i] == '\0' || !std::strchr("rwxps-", s[i])) return false;
  if (!expect(s, i, ' ') || !hex(s, i, out.offset) || !expect(s, i, ' ')) return false;
  if (!hex(s, i, out.dev_major) || !expect(s, i, ':') || !hex(s, i, out.dev_minor) || !expect(s, i, ' '))
    return false;
  std::size_t digits = i;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  if (i == digits || std::from_chars(s.data() + digits, s.data() + i, out.inode).ptr != s.data() + i) return false;
  if (i == s.size()) {
    out.path = {};
    return true;
  }
  if (!skip_spaces(s, i)) return false;
  out.path = s.substr(i);
  return out.path.find('\0') == std::string_view::npos && out.path.find('\n') == std::string_view::npos;
}

std::size_t select_modules(const char* maps, std::size_t size, const std::uint64_t* pcs,
                           std::size_t count, char* out, std::size_t cap) noexcept {
  // A last line without its newline was cut short (the crash handler reads the maps into a
  // buffer of fixed size): its path may be the start of another file's ("/opt/libx.so.1" of
  // "/opt/libx.so.12"), which would then be symbolized in its place. Left out.
  std::string_view text(maps, size);
  text = text.substr(0, text.rfind('\n') + 1);
  std::size_t written = 0;
  // A module is a run of consecutive lines of one file; it is kept whole, or not at all.
  std::size_t group_begin = 0, group_end = 0;
  std::string_view group_path;
  bool group_hit = false;
  auto flush = [&] {
    std::size_t n = group_end - group_begin;
    if (group_hit && !group_path.empty() && written + n <= cap) {
      std::memcpy(out + written, maps + group_begin, n);
      written += n;
    }
  };
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t nl = text.find('\n', at);
    std::size_t line_end = nl == std::string_view::npos ? text.size() : nl;
    std::size_t next = nl == std::string_view::npos ? text.size() : nl + 1;
    MapsLine m;
    std::string_view path;
    bool parsed = parse_maps_line(text.substr(at, line_end - at), m);
    if (parsed && !m.path.empty() && m.path[0] == '/') path = m.path;
    if (path.empty() || path != group_path) {
      flush();
      group_begin = at;
      group_path = path;
      group_hit = false;
    }
    group_end = next;
    if (!path.empty() && holds_any(m, pcs, count)) group_hit = true;
    at = next;
  }
  flush();
  return written;
}

namespace {

struct Module {
  std::string path;
  std::uint64_t base = 0;  // where the worker mapped the file's offset 0
};

/// The modules of a stack's maps text: consecutive lines of one file are one module, loaded at
/// the start of its line with offset 0 (the ELF header; what dwfl_report_elf calls the address
/// where to place the file).
std::vector<Module> modules_of(std::string_view maps) {
  std::vector<Module> out;
  std::string_view last;
  bool have_base = false;
  std::size_t at = 0;
  while (at < maps.size()) {
    std::size_t nl = maps.find('\n', at);
    std::string_view line = maps.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at);
    at = nl == std::string_view::npos ? maps.size() : nl + 1;
    MapsLine m;
    if (!parse_maps_line(line, m) || m.path.empty() || m.path[0] != '/') continue;
    if (out.empty() || m.path != last) {
      out.push_back({std::string(m.path), m.start - m.offset});
      last = out.back().path;
      have_base = m.offset == 0;
    } else if (!have_base && m.offset == 0) {
      out.back().base = m.start;
      have_base = true;
    }
  }
  return out;
}

std::string demangled(const char* name) {
  if (!name) return {};
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> d(abi::__cxa_demangle(name, nullptr, nullptr, &status),
                                                &std::free);
  return status == 0 && d ? std::string(d.get()) : std::string(name);
}

std::string hex_text(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string_view base_name(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

/// `text` as a frame shows it: at most max_frame_name bytes (cut at a UTF-8 character's start),
/// saying how much was left out.
/// A name or path read from a module (a plugin's symbol table, its debug information, where the
/// worker said it was mapped): cut, and with its controls as \xNN and a newline as \x0a, so that
/// a frame is one line and a plugin's names cannot send escape sequences to a terminal.
std::string shown(std::string text) { return message_text(cut_text(std::move(text), max_frame_name), "\\x0a"); }

/// The name of a function's DIE: its linkage name demangled (the whole signature, as the symbol
/// table gives for frames that were not inlined), else (none, or one this demangler cannot read,
/// such as some lambdas') its plain name; through the abstract origin an inlined copy points to.
std::string die_function(Dwarf_Die* die) {
  Dwarf_Attribute attr;
  for (int name : {DW_AT_linkage_name, DW_AT_MIPS_linkage_name}) {
    const char* s = dwarf_formstring(dwarf_attr_integrate(die, name, &attr));
    if (!s) continue;
    int status = 0;
    std::unique_ptr<char, decltype(&std::free)> d(abi::__cxa_demangle(s, nullptr, nullptr, &status), &std::free);
    if (status == 0 && d) return d.get();
    break;
  }
  const char* s = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_name, &attr));
  return s ? s : "";
}

/// One function inlined at an address: its name, and where its caller called it ("file:line",
/// "" when the DWARF does not say).
struct Inlined {
  std::string function;
  std::string call_site;
};

/// Calls inlined at `at` in `mod`, innermost first, up to the function the code belongs to (not
/// included); none without DWARF. Bounded: a module's DWARF comes with a hostile worker's stack.
std::vector<Inlined> inlined_at(Dwfl_Module* mod, Dwarf_Addr at) {
  std::vector<Inlined> out;
  Dwarf_Addr bias = 0;
  Dwarf_Die* cu = dwfl_module_addrdie(mod, at, &bias);
  if (!cu) return out;
  Dwarf_Die* scopes = nullptr;
  int n = dwarf_getscopes(cu, at - bias, &scopes);
  if (n <= 0) return out;
  // dwarf_getscopes goes on from an inlined call into its abstract definition (the inlined
  // function's own scopes, ending in its DW_TAG_subprogram), not into the function it was
  // inlined in: asked again from the innermost scope's own DIE, dwarf_getscopes_die gives the
  // scopes that hold it, each call inlined in another included (as eu-addr2line -i does). Only
  // the innermost call was found before, and the next frame took its call site for its own line.
  Dwarf_Die innermost = scopes[0];
  std::free(scopes);
  scopes = nullptr;
  n = dwarf_getscopes_die(&innermost, &scopes);
  if (n <= 0) return out;
  std::unique_ptr<Dwarf_Die, decltype(&std::free)> keep(scopes, &std::free);
  Dwarf_Files* files = nullptr;
  std::size_t file_count = 0;
  if (dwarf_getsrcfiles(cu, &files, &file_count) != 0) files = nullptr;
  for (int i = 0; i < n && out.size() < 16; ++i) {
    int tag = dwarf_tag(&scopes[i]);
    if (tag == DW_TAG_subprogram) break;
    if (tag != DW_TAG_inlined_subroutine) continue;  // a lexical block
    Inlined call{die_function(&scopes[i]), ""};
    Dwarf_Attribute attr;
    Dwarf_Word file = 0, line = 0;
    if (files && dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &file) == 0 &&
        dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &line) == 0 && line > 0 &&
        file < file_count) {
      if (const char* name = dwarf_filesrc(files, file, nullptr, nullptr))
        call.call_site = std::string(name) + ":" + std::to_string(line);
    }
    out.push_back(std::move(call));
  }
  return out;
}

/// Whether a frame is the task's entry point, below which only the worker loop runs.
bool is_entry_point(std::string_view function) {
  return function.find("ferry::detail::invoke<") != std::string_view::npos ||
         function.find("ferry::detail::invoke_json<") != std::string_view::npos;
}

/// Whether a frame is ferry-worker's loop, which calls the entry point: where the frames below a
/// task end when the entry point has no name (a plugin stripped of its symbol table).
bool is_worker_loop(std::string_view function) {
  return function.rfind("ferry::detail::(anonymous namespace)::WorkerLoop::", 0) == 0 ||
         function.rfind("ferry::detail::run_worker(", 0) == 0 || function.rfind("ferry::detail::worker_main(", 0) == 0;
}

struct DwflDeleter {
  void operator()(Dwfl* d) const { dwfl_end(d); }
};

/// never_symbolize_under's directories, resolved; kept for the life of the process (a stack may be
/// symbolized long after its pool has gone).
struct Forbidden {
  std::mutex mu;
  std::vector<std::string> dirs;
};
Forbidden& forbidden() {
  static Forbidden f;
  return f;
}

/// Whether `p` is a never_symbolize_under() entry or lies under one. Under f.mu.
bool under_forbidden(const Forbidden& f, std::string_view p) {
  for (const std::string& d : f.dirs)
    if (d == "/" || p == d || (p.size() > d.size() && p.compare(0, d.size(), d) == 0 && p[d.size()] == '/'))
      return true;
  return false;
}

/// Whether the module a worker named `path`, open at `fd`, must not be read: a file of no
/// directory (a memfd, a deleted file: what a task can make and name through a /proc link), or
/// one under a never_symbolize_under() entry, by the path as named and by the path the kernel
/// gives for the descriptor (so no link, and none swapped in after the open, changes the answer).
bool forbidden_file(const std::string& path, int fd, const struct stat& st) {
  if (st.st_nlink == 0) return true;
  // The host's stdin, stdout and stderr: workers inherit them, and a sandbox's Landlock rules do
  // not cover what was open before (a log file the host writes to, a task could write too).
  for (int std_fd = 0; std_fd <= 2; ++std_fd) {
    struct stat s {};
    if (::fstat(std_fd, &s) == 0 && s.st_dev == st.st_dev && s.st_ino == st.st_ino) return true;
  }
  Forbidden& f = forbidden();
  std::lock_guard lock(f.mu);
  if (f.dirs.empty()) return false;
  if (under_forbidden(f, std::filesystem::path(path).lexically_normal().string())) return true;
  char link[64], real[4096];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(link, real, sizeof real);
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof real || real[0] != '/') return true;  // cannot tell
  return under_forbidden(f, std::string_view(real, static_cast<std::size_t>(n)));
}

/// A path through /proc: a magic link (/proc/PID/fd/N, /proc/self/root, ...) reaches what no
/// directory holds, such as a task's memfd; never a module of a stack.
bool through_proc(const std::string& path) {
  std::string p = std::filesystem::path(path).lexically_normal().string();
  return p == "/proc" || p.rfind("/proc/", 0) == 0;
}

/// What one address of a module says: its function, file:line, and the calls inlined there.
struct Looked {
  std::string function;
  std::string where;
  std::vector<Inlined> inlined;
};

/// The lookups done through libdw (symbolize_lookups()).
std::atomic<std::size_t> g_lookups{0};

/// Looked-up addresses by file (as the host found it: device, inode, size, modification time) and
/// offset from the module's start: a worker that crashes again at the same place has its libraries
/// elsewhere (each process its own random layout), yet the same lookups. libdw's first lookup in
/// a module reads its symbol table and debug information again in each new Dwfl (~65 ms a stack
/// here): a crash loop under `ferry map --keep-going`, whose errors are each described, took
/// 74 ms a failing line, 7 of it without symbolizing. Bounded: emptied when full.
class LookupMemo {
 public:
  static std::string key(const struct stat& st, std::uint64_t offset) {
    const std::uint64_t fields[] = {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
                                    static_cast<std::uint64_t>(st.st_size),
                                    static_cast<std::uint64_t>(st.st_mtim.tv_sec),
                                    static_cast<std::uint64_t>(st.st_mtim.tv_nsec), offset};
    return std::string(reinterpret_cast<const char*>(fields), sizeof fields);
  }
  bool find(const std::string& key, Looked& out) {
    std::lock_guard lock(mu_);
    auto it = memo_.find(key);
    if (it == memo_.end()) return false;
    out = it->second;
    return true;
  }
  void keep(std::string key, const Looked& looked) {
    std::lock_guard lock(mu_);
    if (memo_.size() >= 4096) memo_.clear();
    memo_.emplace(std::move(key), looked);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, Looked> memo_;
};

LookupMemo& lookup_memo() {
  static auto* memo = new LookupMemo;  // never destroyed: a stack may be shown during exit
  return *memo;
}

Looked look_up(Dwfl_Module* mod, Dwarf_Addr at) {
  g_lookups.fetch_add(1, std::memory_order_relaxed);
  Looked l;
  GElf_Off offset = 0;
  GElf_Sym sym{};
  l.function = shown(demangled(dwfl_module_addrinfo(mod, at, &offset, &sym, nullptr, nullptr, nullptr)));
  if (Dwfl_Line* line = dwfl_module_getsrc(mod, at)) {
    int lineno = 0;
    if (const char* file = dwfl_lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr); file && lineno > 0)
      l.where = shown(file) + ":" + std::to_string(lineno);
  }
  l.inlined = inlined_at(mod, at);
  for (Inlined& call : l.inlined) {
    call.function = shown(std::move(call.function));
    call.call_site = shown(std::move(call.call_site));
  }
  return l;
}

}  // namespace

std::size_t symbolize_lookups() noexcept { return g_lookups.load(std::memory_order_relaxed); }

void never_symbolize_under(const std::string& text) {
  const std::filesystem::path dir(text);
  std::error_code ec;
  std::filesystem::path resolved = std::filesystem::weakly_canonical(dir, ec);
  Forbidden& f = forbidden();
  std::lock_guard lock(f.mu);
  for (const std::filesystem::path& p : {dir.lexically_normal(), ec ? dir.lexically_normal() : resolved}) {
    std::string s = p.string();
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    if (!s.empty() && std::find(f.dirs.begin(), f.dirs.end(), s) == f.dirs.end()) f.dirs.push_back(s);
  }
}

std::string symbolize(const RawStack& stack, bool exact_first) {
  if (stack.empty()) return {};
  // Separate debug files only by build ID under the standard directories: never a download
  // (debuginfod), whatever the environment says, from a library that reports an error.
  static char* debuginfo_path = nullptr;
  static const Dwfl_Callbacks callbacks = {
      .find_elf = dwfl_linux_proc_find_elf,
      .find_debuginfo = dwfl_build_id_find_debuginfo,
      .section_address = dwfl_offline_section_address,
      .debuginfo_path = &debuginfo_path,
  };
  std::unique_ptr<Dwfl, DwflDeleter> dwfl(dwfl_begin(&callbacks));
  std::unordered_map<Dwfl_Module*, struct stat> files;  // what each module was read from
  if (dwfl) {
    dwfl_report_begin(dwfl.get());
    for (const Module& m : modules_of(stack.maps)) {
      // Only a regular file: the path comes from the worker, which may be hostile (a FIFO would
      // block this thread). Looked at through an O_PATH descriptor first, which opens nothing:
      // opening a device runs its driver (a watchdog armed, a serial line's DTR toggled). The
      // file is then opened for reading through that descriptor, the same inode, and goes to
      // libdwfl, which closes it.
      if (through_proc(m.path)) continue;
      // Only a file no other user could change (the trust check of what ferry loads): libdwfl
      // maps it, so another user's file, truncated while it is parsed, would end the host with
      // SIGBUS, and its contents could be crafted against the DWARF reader. The plugins a worker
      // loads pass this check already (unless FERRY_ALLOW_UNSAFE_PLUGINS turned it off: their
      // frames then have no names), as do the system's libraries; a task naming anyone's file
      // gets a frame without a name.
      if (!untrusted_reason(m.path).empty()) continue;
      Fd where(::open(m.path.c_str(), O_PATH | O_CLOEXEC));
      if (!where) continue;
      struct stat st {};
      if (::fstat(where.get(), &st) != 0 || !S_ISREG(st.st_mode) || forbidden_file(m.path, where.get(), st))
        continue;
      const std::string same = "/proc/self/fd/" + std::to_string(where.get());
      int fd = ::open(same.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
      if (fd < 0) continue;
      if (Dwfl_Module* mod = dwfl_report_elf(dwfl.get(), m.path.c_str(), m.path.c_str(), fd, m.base, false))
        files.emplace(mod, st);
      else
        ::close(fd);
    }
    dwfl_report_end(dwfl.get(), nullptr, nullptr);
  }

  // Each address is a group of lines: the calls inlined there, then the function it is in. A
  // group equal to the one before it (a recursion, a stack overflow's 64 frames of one function)
  // is said once, then counted.
  std::string out;
  std::size_t frame = 0;  // an inlined call is a frame of its own
  std::vector<std::string> group, previous;
  std::size_t repeats = 0;  // of `previous`, not shown yet
  auto add_line = [&](const std::string& text) {
    out += "#" + std::to_string(frame) + (frame < 10 ? "  " : " ") + text + "\n";
    ++frame;
  };
  auto flush_repeats = [&] {
    if (repeats == 1) {
      for (const std::string& line : previous) add_line(line);
    } else if (repeats > 1) {
      const std::size_t first = frame;
      frame += repeats * previous.size();
      out += "    ... " +
             (previous.size() == 1 ? std::string("the frame above") : "the " + std::to_string(previous.size()) + " frames above") +
             " again, " + std::to_string(repeats) + " more times (#" + std::to_string(first) + " to #" +
             std::to_string(frame - 1) + ")\n";
    }
    repeats = 0;
  };
  auto frames = [](std::uint64_t n) { return std::to_string(n) + (n == 1 ? " frame" : " frames"); };
  bool reached_entry = false, gap = false;
  // The `rest` addresses from here on are ferry-worker's loop, which called the task: counted.
  auto end_at_worker_loop = [&](std::size_t rest) {
    flush_repeats();
    out += "    ... " + frames(rest) + " of the worker loop\n";
    reached_entry = true;
  };
  for (std::size_t i = 0; i < stack.pcs.size(); ++i) {
    const std::uint64_t pc = stack.pcs[i];
    if (pc == stack_gap && i > 0 && i + 1 < stack.pcs.size()) {
      // A stack deeper than travels: its innermost frames, then its outermost.
      flush_repeats();
      previous.clear();
      const std::uint64_t left_out = stack.pcs[++i];
      out += "    ... " + frames(left_out) + " not recorded\n";
      gap = true;
      continue;
    }
    // A return address is the instruction after the call: look up the call itself.
    const std::uint64_t at = (i == 0 && exact_first) || pc == 0 ? pc : pc - 1;
    Dwfl_Module* mod = dwfl ? dwfl_addrmodule(dwfl.get(), at) : nullptr;
    std::string function, where, module;
    std::vector<Inlined> inlined;
    if (mod) {
      Dwarf_Addr start = 0;
      const char* path = dwfl_module_info(mod, nullptr, &start, nullptr, nullptr, nullptr, nullptr, nullptr);
      Looked looked;
      auto file = files.find(mod);
      const std::string key = file == files.end() ? std::string() : LookupMemo::key(file->second, at - start);
      if (key.empty() || !lookup_memo().find(key, looked)) {
        looked = look_up(mod, at);
        if (!key.empty()) lookup_memo().keep(key, looked);
      }
      function = std::move(looked.function);
      where = std::move(looked.where);
      inlined = std::move(looked.inlined);
      module = shown(std::string(base_name(path ? path : ""))) + (function.empty() ? "+" + hex_text(pc - start) : "");
    } else {
      module = hex_text(pc) + ", no module";
    }
    if (frame > 0 && is_worker_loop(function)) {
      end_at_worker_loop(stack.pcs.size() - i);
      break;
    }
    group.clear();
    auto add_frame = [&](const std::string& name, const std::string& place, const std::string& in) {
      std::string line = name.empty() ? "??" : name;
      if (!place.empty()) line += " at " + place;
      group.push_back(line + " (" + in + ")");
    };
    // The innermost inlined call holds the address's file:line; each caller, the call site of
    // the call inside it.
    for (Inlined& call : inlined) {
      add_frame(call.function, where, module + ", inlined");
      where = std::move(call.call_site);
    }
    add_frame(function, where, module);
    if (is_entry_point(function)) {
      // ferry's own calls inlined into the entry point (TaskCall::call) sit between the task's
      // frames and the entry point, which already names the task: left out.
      std::erase_if(group, [&](const std::string& line) {
        return line.rfind("ferry::detail::", 0) == 0 && line != group.back();
      });
    }
    if (!previous.empty() && group == previous) {
      ++repeats;
    } else {
      flush_repeats();
      for (const std::string& line : group) add_line(line);
      previous.swap(group);
    }
    if (is_entry_point(function) && i + 1 < stack.pcs.size()) {
      end_at_worker_loop(stack.pcs.size() - i - 1);
      break;
    }
  }
  flush_repeats();
  // A stack keeps its innermost max_stack_frames addresses: a deep one (a stack overflow) was cut.
  if (!reached_entry && !gap && stack.pcs.size() >= max_stack_frames)
    out += "    ... the frames below were not recorded (a stack keeps its " + std::to_string(max_stack_frames) +
           " innermost)\n";
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

namespace {

/// Live values by hash, each found again while something holds it: what make() shares. Never
/// destroyed (an error may be made, or outlive, the static destructors at exit).
template <class T>
class Shared {
 public:
  /// The live value equal to the one `make` would build (`equal`), else `make()`'s, kept.
  template <class Equal, class Make>
  std::shared_ptr<const T> get(std::size_t hash, const Equal& equal, const Make& make) {
    std::lock_guard lock(mu_);
    auto [begin, end] = live_.equal_range(hash);
    for (auto it = begin; it != end; ++it)
      if (std::shared_ptr<const T> p = it->second.lock(); p && equal(*p)) return p;
    std::shared_ptr<const T> p = make();
    // Entries of values gone are swept when the table has doubled since the last sweep: as many
    // entries as live values, give or take a factor of two.
    if (live_.size() >= sweep_at_) {
      std::erase_if(live_, [](const auto& entry) { return entry.second.expired(); });
      sweep_at_ = std::max<std::size_t>(64, 2 * live_.size());
    }
    live_.emplace(hash, p);
    return p;
  }

 private:
  std::mutex mu_;
  std::unordered_multimap<std::size_t, std::weak_ptr<const T>> live_;
  std::size_t sweep_at_ = 64;
};

std::size_t hash_of(const std::vector<std::uint64_t>& pcs, const std::string& maps, bool exact_first) {
  const std::string_view bytes(reinterpret_cast<const char*>(pcs.data()), pcs.size() * sizeof pcs[0]);
  return std::hash<std::string_view>{}(bytes) ^ (std::hash<std::string>{}(maps) * 31) ^ exact_first;
}

}  // namespace

RemoteStack::RemoteStack(RawStack raw, bool exact_first) : pcs_(std::move(raw.pcs)), exact_first_(exact_first) {
  static auto* maps = new Shared<std::string>;
  auto text = std::make_shared<std::string>(std::move(raw.maps));
  maps_ = maps->get(
      std::hash<std::string>{}(*text), [&](const std::string& m) { return m == *text; },
      [&] { return std::shared_ptr<const std::string>(std::move(text)); });
}

std::shared_ptr<const RemoteStack> RemoteStack::make(RawStack raw, bool exact_first) {
  static auto* stacks = new Shared<RemoteStack>;
  return stacks->get(
      hash_of(raw.pcs, raw.maps, exact_first),
      [&](const RemoteStack& s) {
        return !s.ready_ && s.exact_first_ == exact_first && s.pcs_ == raw.pcs && *s.maps_ == raw.maps;
      },
      [&] { return std::make_shared<const RemoteStack>(std::move(raw), exact_first); });
}

const std::string& RemoteStack::text() const noexcept {
  if (ready_) return text_;
  try {
    std::call_once(once_, [this] {
      try {
        text_ = symbolize(RawStack{pcs_, maps_ ? *maps_ : std::string()}, exact_first_);
      } catch (const std::exception& e) {
        text_ = std::string("(the remote stack could not be symbolized: ") + e.what() + ")";
      }
    });
  } catch (...) {
    // call_once itself failed (no thread resources): the text stays as it is.
  }
  return text_;
}

}  // namespace ferry::detail
