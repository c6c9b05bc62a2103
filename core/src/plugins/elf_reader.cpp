// SPDX-License-Identifier: BSD-3-Clause
// A small, bounds-checked ELF64 reader (x86-64 little endian).
#include "plugins/elf_reader.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
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

/// A whole file, read-only: mapped when only this user or root can change it, else copied.
/// Another user's file (a plugin directory's entries are read to say what a refused file holds)
/// could be truncated while it is parsed, and a read past the end of a mapping is SIGBUS.
class Mapping {
 public:
  /// Largest file copied: a plugin others can write is read only to be reported.
  static constexpr std::size_t max_copied = std::size_t{256} << 20;

  explicit Mapping(const std::filesystem::path& file) {
    // O_NONBLOCK: a FIFO planted under a plugin's name must not block the open (it is then
    // refused as not a regular file).
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      int e = errno;
      throw ElfError(e == ENOENT ? ElfError::Kind::missing : ElfError::Kind::unreadable,
                     std::string(std::strerror(e)));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw ElfError(ElfError::Kind::unreadable, "not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    bool others_can_change = (st.st_uid != ::geteuid() && st.st_uid != 0) || (st.st_mode & (S_IWGRP | S_IWOTH));
    if (size_ > 0 && others_can_change) {
      if (size_ > max_copied) {
        ::close(fd);
        throw ElfError(ElfError::Kind::unreadable, "too large to inspect (another user can change it)");
      }
      copy_.resize(size_);
      std::size_t got = 0;
      while (got < size_) {
        ssize_t n = ::pread(fd, copy_.data() + got, size_ - got, static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // truncated meanwhile: parse what was there
        got += static_cast<std::size_t>(n);
      }
      copy_.resize(got);
      size_ = got;
      data_ = copy_.data();
    } else if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        throw ElfError(ElfError::Kind::unreadable, std::string("mmap: ") + std::strerror(e));
      }
      data_ = static_cast<const unsigned char*>(p);
      mapped_ = true;
    }
    ::close(fd);
  }
  ~Mapping() {
    if (mapped_) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
  std::vector<unsigned char> copy_;
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

/// Bounds-checked view of the file.
class Image {
 public:
  Image(const unsigned char* data, std::size_t size) : data_(data), size_(size) {}

  bool fits(std::uint64_t off, std::uint64_t len) const {
    return off <= size_ && len <= size_ - off;
  }
  template <class T>
  T read(std::uint64_t off) const {
    if (!fits(off, sizeof(T))) throw ElfError(ElfError::Kind::truncated, "file is truncated");
    T v;
    std::memcpy(&v, data_ + off, sizeof(T));
    return v;
  }
  /// The NUL-terminated string at `off` of a string table ([table_off, table_off + table_size)),
  /// or "" when it is not there, not terminated, or
  /// longer than max_string: a hostile file's symbols can all name one unterminated table, and
  /// an unbounded scan for each made reading it quadratic in its size.
  std::string_view str(std::uint64_t table_off, std::uint64_t table_size, std::uint64_t off) const {
    if (!fits(table_off, table_size) || off >= table_size) return {};
    const char* begin = reinterpret_cast<const char*>(data_ + table_off + off);
    std::size_t max = static_cast<std::size_t>(std::min<std::uint64_t>(table_size - off, max_string + 1));
    std::size_t n = ::strnlen(begin, max);
    if (n == max) return {};  // unterminated, or too long
    return {begin, n};
  }
  const unsigned char* at(std::uint64_t off) const { return data_ + off; }

  Elf64_Ehdr header() const {
    if (size_ < EI_NIDENT || std::memcmp(data_, ELFMAG, SELFMAG) != 0)
      throw ElfError(ElfError::Kind::not_elf, "not an ELF file");
    if (data_[EI_CLASS] != ELFCLASS64 || data_[EI_DATA] != ELFDATA2LSB)
      throw ElfError(ElfError::Kind::wrong_machine,
                     std::string("built for another machine: ") +
                         (data_[EI_CLASS] == ELFCLASS32 ? "32-bit" : data_[EI_CLASS] == ELFCLASS64 ? "64-bit" : "unknown class") +
                         (data_[EI_DATA] == ELFDATA2MSB ? " big-endian" : data_[EI_DATA] == ELFDATA2LSB ? " little-endian" : "") +
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
    return read<Elf64_Shdr>(eh.e_shoff + std::uint64_t{i} * sizeof(Elf64_Shdr));
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
      std::uint64_t count = sh.sh_size / sizeof(Elf64_Sym);
      for (std::uint64_t s = 0; s < count; ++s) {
        auto sym = read<Elf64_Sym>(sh.sh_offset + s * sizeof(Elf64_Sym));
        if (!prefix.empty() && (!fits(strtab.sh_offset, strtab.sh_size) || sym.st_name >= strtab.sh_size ||
                                strtab.sh_size - sym.st_name < prefix.size() ||
                                std::memcmp(data_ + strtab.sh_offset + sym.st_name, prefix.data(), prefix.size()) != 0))
          continue;
        f(sym, str(strtab.sh_offset, strtab.sh_size, sym.st_name));
      }
      return;
    }
  }

 private:
  const unsigned char* data_;
  std::size_t size_;
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
  std::uint64_t text = std::uint64_t{h.name_size} + h.signature_size + 2;
  if (text > sym.st_size - sizeof(TaskRecordHeader)) {
    r.problem = "record text is truncated";
    return r;
  }
  const char* p = reinterpret_cast<const char*>(img.at(off + sizeof(TaskRecordHeader)));
  r.name.assign(p, h.name_size);
  r.signature.assign(p + h.name_size + 1, h.signature_size);
  if (r.name != expected) r.problem = "record name differs from its symbol";
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

}  // namespace

std::vector<ElfTaskRecord> parse_task_records(const unsigned char* data, std::size_t size) {
  return records_of(Image(data, size));
}

std::vector<ElfTaskRecord> read_task_records(const std::filesystem::path& file) {
  Mapping m(file);
  return records_of(Image(m.data(), m.size()));
}

std::optional<std::string> function_symbol_at(const std::filesystem::path& file,
                                              std::uint64_t vaddr) {
  try {
    Mapping m(file);
    Image img(m.data(), m.size());
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
