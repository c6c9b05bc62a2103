// SPDX-License-Identifier: BSD-3-Clause
// A small, bounds-checked ELF64 reader (x86-64 little endian).
#include "plugins/elf_reader.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ferry/task.hpp>

namespace ferry::detail {

namespace {

/// The longest string read from a string table (a symbol's name), and the most task records one
/// library may have: bounds on what a hostile file makes the reader do.
constexpr std::size_t max_string = 65536;
constexpr std::size_t max_records = 4096;
/// The longest task name a record may hold (and its symbol, with the prefix).
constexpr std::uint32_t max_task_name = 4096;

}  // namespace

std::string file_version(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ":" +
         std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec);
}

std::string file_identity(const struct stat& st) {
  return file_version(st) + ":" + std::to_string(st.st_mode) + ":" + std::to_string(st.st_uid) + ":" +
         std::to_string(st.st_gid);
}

namespace {

/// A plugin file, open for reading: regular, looked at first through an O_PATH descriptor, which
/// opens nothing (a device swapped in under a plugin's name, in a directory another user writes,
/// would run its driver when opened; a FIFO would block), then opened for reading through that
/// descriptor, the same inode.
class OpenFile {
 public:
  explicit OpenFile(const std::filesystem::path& file) : fd_(::open(file.c_str(), O_PATH | O_CLOEXEC)) {
    if (fd_ < 0) {
      int e = errno;
      throw ElfError(e == ENOENT ? ElfError::Kind::missing : ElfError::Kind::unreadable,
                     std::string(std::strerror(e)), e);
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw ElfError(ElfError::Kind::unreadable, "not a regular file");
    }
    const std::string same = "/proc/self/fd/" + std::to_string(fd_);
    int readable = ::open(same.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    const int e = errno;
    ::close(fd_);
    fd_ = readable;
    if (fd_ < 0) throw ElfError(ElfError::Kind::unreadable, std::string(std::strerror(e)), e);
    size_ = static_cast<std::size_t>(st.st_size);
    identity_ = file_identity(st);
  }
  ~OpenFile() { ::close(fd_); }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  int fd() const { return fd_; }
  std::size_t size() const { return size_; }
  const std::string& identity() const { return identity_; }

 private:
  int fd_;
  std::size_t size_ = 0;
  std::string identity_;
};

#if defined(__x86_64__)
constexpr std::uint16_t this_machine = EM_X86_64;
#elif defined(__aarch64__)
constexpr std::uint16_t this_machine = EM_AARCH64;
#else
#error "ferry reads ELF files of x86-64 and aarch64 only"
#endif

/// "aarch64 (ELF machine 183)", for messages.
std::string machine_name(std::uint16_t m) {
  const char* name = m == EM_X86_64    ? "x86-64"
                     : m == EM_AARCH64 ? "aarch64"
                     : m == EM_386     ? "i386"
                     : m == EM_ARM     ? "arm"
                     : m == EM_RISCV   ? "riscv"
                     : m == EM_PPC64   ? "ppc64"
                     : m == EM_S390    ? "s390"
                                       : "an unknown machine";
  return std::string(name) + " (ELF machine " + std::to_string(m) + ")";
}

/// Bounds-checked view of the file: bytes in memory, or a file read with pread as its parts are
/// needed. A file is never mapped: one truncated while it is read (`cp` over a plugin a host is
/// scanning, or another user's file named in a plugin directory) would make a read past the new
/// end of a mapping SIGBUS; a short read is an ElfError instead.
class Image {
 public:
  Image(const unsigned char* data, std::size_t size) : data_(data), in_memory_(true), size_(size) {}
  /// `max_table`: the largest table read from the file (a symbol table, its names, the section
  /// headers).
  Image(int fd, std::size_t size, std::uint64_t max_table = std::uint64_t{256} << 20)
      : fd_(fd), size_(size), max_table_(max_table) {}

  std::size_t size() const { return size_; }
  bool fits(std::uint64_t off, std::uint64_t len) const {
    return off <= size_ && len <= size_ - off;
  }
  template <class T>
  T read(std::uint64_t off) const {
    T v;
    read_into(&v, off, sizeof(T));
    return v;
  }
  /// [off, off + len) as one string (a record's text: read once, not kept).
  std::string copy(std::uint64_t off, std::uint64_t len) const {
    std::string out(static_cast<std::size_t>(len), '\0');
    read_into(out.data(), off, len);
    return out;
  }
  /// [off, off + len) in memory for as long as the image lives (a table: read once, kept).
  const unsigned char* table(std::uint64_t off, std::uint64_t len) const {
    if (!fits(off, len)) throw ElfError(ElfError::Kind::truncated, "file is truncated");
    if (in_memory_) return data_ + off;
    // What the file's own headers claim: a verdict of its bytes, as a wrong header is.
    if (len > max_table_)
      throw ElfError(ElfError::Kind::not_shared_library, "a table of " + std::to_string(len) +
                                                     " bytes is larger than ferry reads (" +
                                                     std::to_string(max_table_) + ")");
    auto [it, added] = tables_.try_emplace({off, len});
    if (added) {
      try {
        it->second.resize(static_cast<std::size_t>(len));
        read_into(it->second.data(), off, len);
      } catch (...) {
        tables_.erase(it);
        throw;
      }
    }
    return it->second.data();
  }
  /// The NUL-terminated string at `off` of a string table ([table_off, table_off + table_size)),
  /// or "" when it is not there, not terminated, or
  /// longer than max_string: a hostile file's symbols can all name one unterminated table, and
  /// an unbounded scan for each made reading it quadratic in its size.
  std::string_view str(std::uint64_t table_off, std::uint64_t table_size, std::uint64_t off) const {
    if (!fits(table_off, table_size) || off >= table_size) return {};
    const char* begin = reinterpret_cast<const char*>(table(table_off, table_size) + off);
    std::size_t max = static_cast<std::size_t>(std::min<std::uint64_t>(table_size - off, max_string + 1));
    std::size_t n = ::strnlen(begin, max);
    if (n == max) return {};  // unterminated, or too long
    return {begin, n};
  }

  Elf64_Ehdr header() const {
    if (size_ < EI_NIDENT) throw ElfError(ElfError::Kind::not_elf, "not an ELF file");
    const auto ident = read<std::array<unsigned char, EI_NIDENT>>(0);
    if (std::memcmp(ident.data(), ELFMAG, SELFMAG) != 0) throw ElfError(ElfError::Kind::not_elf, "not an ELF file");
    if (ident[EI_CLASS] != ELFCLASS64 || ident[EI_DATA] != ELFDATA2LSB)
      throw ElfError(ElfError::Kind::wrong_machine,
                     std::string("built for another machine: ") +
                         (ident[EI_CLASS] == ELFCLASS32 ? "32-bit" : ident[EI_CLASS] == ELFCLASS64 ? "64-bit" : "unknown class") +
                         (ident[EI_DATA] == ELFDATA2MSB ? " big-endian" : ident[EI_DATA] == ELFDATA2LSB ? " little-endian" : "") +
                         " ELF, this machine runs " + machine_name(this_machine) + " (64-bit little-endian)");
    if (size_ < sizeof(Elf64_Ehdr)) throw ElfError(ElfError::Kind::truncated, "file is truncated");
    auto eh = read<Elf64_Ehdr>(0);
    if (eh.e_machine != this_machine)
      throw ElfError(ElfError::Kind::wrong_machine,
                     "built for another machine: " + machine_name(eh.e_machine) +
                         ", this machine runs " + machine_name(this_machine));
    if (eh.e_shentsize != sizeof(Elf64_Shdr) && eh.e_shnum != 0)
      throw ElfError(ElfError::Kind::truncated, "unexpected section header size");
    if (!fits(eh.e_shoff, std::uint64_t{eh.e_shnum} * sizeof(Elf64_Shdr)))
      throw ElfError(ElfError::Kind::truncated, "section headers lie beyond the end of the file");
    return eh;
  }
  Elf64_Shdr section(const Elf64_Ehdr& eh, std::uint32_t i) const {
    if (i >= eh.e_shnum) throw ElfError(ElfError::Kind::truncated, "bad section index");
    Elf64_Shdr sh;
    std::memcpy(&sh, table(eh.e_shoff, std::uint64_t{eh.e_shnum} * sizeof(Elf64_Shdr)) + std::size_t{i} * sizeof(Elf64_Shdr),
                sizeof sh);
    return sh;
  }
  std::string_view section_name(const Elf64_Ehdr& eh, const Elf64_Shdr& sh) const {
    if (eh.e_shstrndx == SHN_UNDEF || eh.e_shstrndx >= eh.e_shnum) return {};
    auto names = section(eh, eh.e_shstrndx);
    return str(names.sh_offset, names.sh_size, sh.sh_name);
  }

  /// Calls f(symbol, name) for each symbol of the first section of `type` (SHT_DYNSYM/SYMTAB),
  /// only those whose name starts with `prefix` if one is given (looked at before the name's
  /// end is searched for).
  template <class F>
  void for_each_symbol(const Elf64_Ehdr& eh, std::uint32_t type, F&& f, std::string_view prefix = {}) const {
    for (std::uint32_t i = 0; i < eh.e_shnum; ++i) {
      auto sh = section(eh, i);
      if (sh.sh_type != type) continue;
      if (sh.sh_entsize != sizeof(Elf64_Sym) || !fits(sh.sh_offset, sh.sh_size))
        throw ElfError(ElfError::Kind::truncated, "symbol table lies beyond the end of the file");
      auto strtab = section(eh, sh.sh_link);
      const bool names_fit = fits(strtab.sh_offset, strtab.sh_size);
      const unsigned char* symbols = table(sh.sh_offset, sh.sh_size);
      const unsigned char* names = names_fit ? table(strtab.sh_offset, strtab.sh_size) : nullptr;
      std::uint64_t count = sh.sh_size / sizeof(Elf64_Sym);
      for (std::uint64_t s = 0; s < count; ++s) {
        Elf64_Sym sym;
        std::memcpy(&sym, symbols + s * sizeof(Elf64_Sym), sizeof sym);
        if (!prefix.empty() && (!names_fit || sym.st_name >= strtab.sh_size ||
                                strtab.sh_size - sym.st_name < prefix.size() ||
                                std::memcmp(names + sym.st_name, prefix.data(), prefix.size()) != 0))
          continue;
        f(sym, str(strtab.sh_offset, strtab.sh_size, sym.st_name));
      }
      return;
    }
  }

 private:
  void read_into(void* out, std::uint64_t off, std::uint64_t len) const {
    if (!fits(off, len)) throw ElfError(ElfError::Kind::truncated, "file is truncated");
    if (in_memory_) {
      if (len) std::memcpy(out, data_ + off, static_cast<std::size_t>(len));
      return;
    }
    auto* p = static_cast<unsigned char*>(out);
    for (std::uint64_t got = 0; got < len;) {
      ssize_t n = ::pread(fd_, p + got, static_cast<std::size_t>(len - got), static_cast<off_t>(off + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw ElfError(ElfError::Kind::unreadable, std::string("read: ") + std::strerror(errno));
      if (n == 0) throw ElfError(ElfError::Kind::truncated, "file was truncated while it was read");
      got += static_cast<std::uint64_t>(n);
    }
  }

  const unsigned char* data_ = nullptr;
  int fd_ = -1;
  bool in_memory_ = false;  // data_, else read from fd_
  std::size_t size_;
  std::uint64_t max_table_ = 0;  // unused in memory
  mutable std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<unsigned char>> tables_;
};

ElfTaskRecord parse_record(const Image& img, const Elf64_Ehdr& eh, const Elf64_Sym& sym,
                           std::string_view symbol) {
  // What one record may hold: every symbol of a file may point at one large record, and each
  // copy of it made reading the file take memory quadratic in its size.
  constexpr std::uint32_t max_name = max_task_name, max_signature = 16384;
  ElfTaskRecord r;
  r.symbol = std::string(symbol);
  std::string_view expected = symbol.substr(task_symbol_prefix.size());
  if (sym.st_shndx == SHN_UNDEF || sym.st_shndx >= eh.e_shnum) {
    r.problem = "record symbol has no section";
    return r;
  }
  auto sh = img.section(eh, sym.st_shndx);
  if (sh.sh_type == SHT_NOBITS || sym.st_value < sh.sh_addr ||
      sym.st_value - sh.sh_addr > sh.sh_size || sym.st_size > sh.sh_size - (sym.st_value - sh.sh_addr)) {
    r.problem = "record lies outside its section";
    return r;
  }
  if (img.section_name(eh, sh) != task_section) {
    r.problem = "record is not in section " + std::string(task_section);
    return r;
  }
  std::uint64_t off = sh.sh_offset + (sym.st_value - sh.sh_addr);
  if (sym.st_size < sizeof(TaskRecordHeader) || !img.fits(off, sym.st_size)) {
    r.problem = "record is truncated";
    return r;
  }
  auto h = img.read<TaskRecordHeader>(off);
  if (std::memcmp(h.magic, task_record_magic, sizeof h.magic) != 0) {
    r.problem = "record has a bad magic";
    return r;
  }
  r.abi = h.abi;
  r.fingerprint = h.fingerprint;
  if (h.name_size > max_name || h.signature_size > max_signature) {
    r.problem = "record text is longer than a task's name (" + std::to_string(max_name) + " bytes) and signature (" +
                std::to_string(max_signature) + ") may be";
    return r;
  }
  // A record of ABI 3 or before has no `layout`: its text follows 56 bytes of header. Read so,
  // it is listed with its name and signature, and refused as built for another ABI.
  const std::uint64_t head = h.abi < 4 ? offsetof(TaskRecordHeader, layout) : sizeof(TaskRecordHeader);
  std::uint64_t text = std::uint64_t{h.name_size} + h.signature_size + 2;
  if (text > sym.st_size - head) {
    r.problem = "record text is truncated";
    return r;
  }
  const std::string bytes = img.copy(off + head, text);
  r.name.assign(bytes.data(), h.name_size);
  r.signature.assign(bytes.data() + h.name_size + 1, h.signature_size);
  if (!valid_task_name(r.name)) {
    // Made by hand, past FERRY_TASK's check: escape sequences, a newline, or an invisible or
    // look-alike character that lists as another task's name (`squ<U+200B>are`).
    r.problem = "record name is not a task name (printable ASCII without spaces, quotes, backslashes or single colons)";
  } else if (r.name != expected) {
    r.problem = "record name differs from its symbol";
  }
  return r;
}

std::vector<ElfTaskRecord> records_of(const Image& img) {
  auto eh = img.header();
  if (eh.e_type != ET_DYN)
    throw ElfError(ElfError::Kind::not_shared_library,
                   eh.e_type == ET_EXEC ? "an executable, not a shared library"
                                        : "not a shared library (ELF type " +
                                              std::to_string(eh.e_type) + ")");
  std::vector<ElfTaskRecord> out;
  std::size_t named = 0;  // symbols named as task records, of any type
  img.for_each_symbol(eh, SHT_DYNSYM, [&](const Elf64_Sym& sym, std::string_view name) {
    if (++named > max_records)
      throw ElfError(ElfError::Kind::truncated, "more than " + std::to_string(max_records) +
                                                    " task symbols in one library (not read further)");
    if (name.starts_with(task_symbol_prefix) && ELF64_ST_TYPE(sym.st_info) == STT_OBJECT &&
        sym.st_shndx != SHN_UNDEF) {
      if (name.size() > task_symbol_prefix.size() + max_task_name) {
        // Never a valid one (a record's name is at most max_task_name): not copied whole.
        ElfTaskRecord r;
        r.symbol = std::string(name.substr(0, task_symbol_prefix.size() + 64)) + "...";
        r.problem = "record symbol is longer than a task's name may be";
        out.push_back(std::move(r));
        return;
      }
      out.push_back(parse_record(img, eh, sym, name));
    }
  }, task_symbol_prefix);
  return out;
}

/// The most entries read from a dynamic segment, and the most DT_NEEDED names kept (glibc's own
/// libraries need a handful; a hostile file's are bounded: past them, the file is an ElfError).
constexpr std::uint64_t max_dynamic_entries = 1 << 20;
constexpr std::size_t max_needed = 65536;

ElfLoadNames load_names_of(const Image& img) {
  // The ELF header as the loader checks it: never the section headers, which it does not read
  // (Image::header refuses a file whose section headers lie outside it; the loader loads it).
  if (img.size() < sizeof(Elf64_Ehdr)) throw ElfError(ElfError::Kind::not_elf, "not an ELF file (too short)");
  const auto eh = img.read<Elf64_Ehdr>(0);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) throw ElfError(ElfError::Kind::not_elf, "not an ELF file");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != this_machine)
    throw ElfError(ElfError::Kind::wrong_machine, "built for another machine");
  if (eh.e_type != ET_DYN) throw ElfError(ElfError::Kind::not_shared_library, "not a shared library");
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) throw ElfError(ElfError::Kind::truncated, "unexpected program header size");
  const unsigned char* ph = img.table(eh.e_phoff, std::uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr));
  std::vector<Elf64_Phdr> loads;
  std::optional<Elf64_Phdr> dynamic;
  for (std::uint32_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr p;
    std::memcpy(&p, ph + std::size_t{i} * sizeof p, sizeof p);
    if (p.p_type == PT_LOAD) loads.push_back(p);
    // As glibc: the last one counts, skipping empty ones (a debuginfo file's).
    if (p.p_type == PT_DYNAMIC && p.p_filesz != 0) dynamic = p;
  }
  ElfLoadNames out;
  // Without one glibc refuses the file: nothing of it is loaded.
  if (!dynamic) return out;
  // The loader reads what is mapped at an address: the file bytes of the loaded segment that holds
  // it, then zeros up to its memory size. [file offset, bytes of file there) of `vaddr`.
  auto mapped = [&](std::uint64_t vaddr) -> std::optional<std::pair<std::uint64_t, std::uint64_t>> {
    for (const auto& p : loads)
      if (vaddr >= p.p_vaddr && vaddr - p.p_vaddr < p.p_memsz) {
        const std::uint64_t into = vaddr - p.p_vaddr;
        return std::pair{p.p_offset + into, into < p.p_filesz ? p.p_filesz - into : 0};
      }
    return std::nullopt;
  };
  const auto dyn_at = mapped(dynamic->p_vaddr);
  if (!dyn_at) throw ElfError(ElfError::Kind::truncated, "the dynamic segment is not in a loaded segment");
  // Entries up to DT_NULL, as the loader reads them (past the segment's file bytes: zeros).
  const std::uint64_t count = std::min(dyn_at->second / sizeof(Elf64_Dyn), max_dynamic_entries);
  const unsigned char* dyn = img.table(dyn_at->first, count * sizeof(Elf64_Dyn));
  std::optional<std::uint64_t> strtab;
  std::vector<std::pair<std::int64_t, std::uint64_t>> named;  // (tag, offset in the string table)
  bool ended = count < max_dynamic_entries;
  for (std::uint64_t i = 0; i < count; ++i) {
    Elf64_Dyn d;
    std::memcpy(&d, dyn + i * sizeof d, sizeof d);
    if (d.d_tag == DT_NULL) {
      ended = true;
      break;
    }
    if (d.d_tag == DT_STRTAB) strtab = d.d_un.d_ptr;  // the last one, as glibc
    // Filters (auxiliary or not) are loaded as the needed libraries are, found the same way.
    if (d.d_tag == DT_NEEDED || d.d_tag == DT_AUXILIARY || d.d_tag == DT_FILTER || d.d_tag == DT_RPATH ||
        d.d_tag == DT_RUNPATH)
      named.emplace_back(d.d_tag, d.d_un.d_val);
  }
  if (!ended) throw ElfError(ElfError::Kind::truncated, "more dynamic entries than ferry reads");
  if (named.empty()) return out;
  if (!strtab) throw ElfError(ElfError::Kind::truncated, "dynamic segment without a string table");
  for (const auto& [tag, off] : named) {
    // At the string table's address plus the offset (the loader never looks at DT_STRSZ).
    if (off > UINT64_MAX - *strtab) throw ElfError(ElfError::Kind::truncated, "a dynamic name lies outside the file");
    const auto at = mapped(*strtab + off);
    if (!at) throw ElfError(ElfError::Kind::truncated, "a dynamic name lies outside the loaded segments");
    std::string text;
    if (at->second != 0) {
      std::string_view found = img.str(at->first, at->second, 0);
      // "" for a name that is not terminated in the file, or too long: only a real "" is taken.
      if (found.empty() && img.read<char>(at->first) != '\0')
        throw ElfError(ElfError::Kind::truncated, "a dynamic name is not a string ferry reads");
      text = std::string(found);
    }  // else in the zeros past the file's bytes: ""
    if (tag == DT_RPATH || tag == DT_RUNPATH) {
      (tag == DT_RPATH ? out.rpath : out.runpath) = std::move(text);  // the last one, as glibc
    } else {
      if (out.needed.size() == max_needed)
        throw ElfError(ElfError::Kind::truncated, "more than " + std::to_string(max_needed) + " needed libraries");
      out.needed.push_back(std::move(text));
    }
  }
  return out;
}

}  // namespace

ElfLoadNames parse_load_names(const unsigned char* data, std::size_t size) {
  return load_names_of(Image(data, size));
}

ElfLoadNames read_load_names(const std::filesystem::path& file) {
  OpenFile f(file);
  ElfLoadNames names = load_names_of(Image(f.fd(), f.size()));
  names.identity = f.identity();
  return names;
}

std::vector<ElfTaskRecord> parse_task_records(const unsigned char* data, std::size_t size) {
  return records_of(Image(data, size));
}

std::vector<ElfTaskRecord> read_task_records(const std::filesystem::path& file) {
  OpenFile f(file);
  return read_task_records(f.fd(), f.size());
}

std::vector<ElfTaskRecord> read_task_records(int fd, std::size_t size) {
  // A scan reads every `*.so` of the plugin directories, refused ones too, whoever put them
  // there: a sparse file of a few KiB on disk claiming a 255 MiB symbol table and as many bytes of
  // names cost 2.8 s and 528 MB of memory to read, each, at every scan it changed for. The
  // largest such tables of this system's 1,800 libraries (LLVM 15's) hold 4.3 MB together; a
  // plugin exports only its tasks.
  constexpr std::uint64_t max_task_table = std::uint64_t{16} << 20;
  return records_of(Image(fd, size, max_task_table));
}

std::optional<std::string> function_symbol_at(const std::filesystem::path& file,
                                              std::uint64_t vaddr) {
  try {
    OpenFile f(file);
    Image img(f.fd(), f.size());
    auto eh = img.header();
    std::optional<std::string> found;
    auto look = [&](const Elf64_Sym& sym, std::string_view name) {
      if (found || name.empty() || ELF64_ST_TYPE(sym.st_info) != STT_FUNC) return;
      if (vaddr >= sym.st_value && vaddr < sym.st_value + std::max<std::uint64_t>(sym.st_size, 1))
        found = demangle(std::string(name).c_str());
    };
    img.for_each_symbol(eh, SHT_SYMTAB, look);
    if (!found) img.for_each_symbol(eh, SHT_DYNSYM, look);
    return found;
  } catch (const ElfError&) {
    return std::nullopt;
  }
}

}  // namespace ferry::detail
