// SPDX-License-Identifier: BSD-3-Clause
// Reads what ferry needs from ELF files without loading them: task records and symbol names.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <cerrno>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// The file is not something ferry can read as a plugin; `what()` says why.
class FERRY_INTERNAL_API ElfError : public std::runtime_error {
 public:
  enum class Kind { missing, unreadable, not_elf, wrong_machine, not_shared_library, truncated };
  ElfError(Kind kind, const std::string& message, int error = 0)
      : std::runtime_error(message), kind_(kind), error_(error) {}
  Kind kind() const noexcept { return kind_; }
  /// The errno of an open that failed (missing, unreadable), else 0.
  int error() const noexcept { return error_; }
  /// This process ran out of something (descriptors, memory): the file says nothing then.
  bool out_of_resources() const noexcept {
    return error_ == EMFILE || error_ == ENFILE || error_ == ENOMEM;
  }

 private:
  Kind kind_;
  int error_ = 0;
};

/// A task record read from the file bytes.
struct ElfTaskRecord {
  std::string symbol;     // "ferry_task:<name>"
  std::string name;
  std::string signature;
  std::uint64_t fingerprint = 0;
  std::uint32_t abi = 0;
  std::string problem;    // non-empty when the record is malformed (then the fields may be empty)
};

/**
Every exported `ferry_task:*` record of a shared library, read from the dynamic symbol table and
the bytes of section `ferry_tasks`. Bounds are checked everywhere: a truncated or hostile file
yields ElfError or a record with `problem` set, never a crash.
@throws ElfError
*/
FERRY_INTERNAL_API std::vector<ElfTaskRecord> read_task_records(const std::filesystem::path& file);

/// Same, from an open file believed to be `size` bytes long (read with pread, never mapped: a
/// file that shrinks meanwhile gives ElfError, not SIGBUS).
FERRY_INTERNAL_API std::vector<ElfTaskRecord> read_task_records(int fd, std::size_t size);

/// Same, from bytes in memory (for the fuzzer and the tests).
FERRY_INTERNAL_API std::vector<ElfTaskRecord> parse_task_records(const unsigned char* data,
                                                                 std::size_t size);

/// What the dynamic loader reads from a shared library to find the libraries it loads with it:
/// the names of its DT_NEEDED, DT_AUXILIARY and DT_FILTER entries (filters are loaded and found as
/// needed libraries are), in order, and its DT_RPATH and DT_RUNPATH strings (absent: nullopt), as
/// written (dynamic string tokens such as `$ORIGIN` not expanded). `identity`: device, inode,
/// size, modification and change times of the file read (fstat of the descriptor read).
struct ElfLoadNames {
  std::vector<std::string> needed;
  std::optional<std::string> rpath, runpath;
  std::string identity;
};

/**
The load names of a shared library, read as glibc's loader reads them: the ELF header without the
section headers (which it never reads); the last PT_DYNAMIC segment, at its address, up to
DT_NULL; each string at DT_STRTAB's address plus its offset (DT_STRSZ is not used), through the
PT_LOAD segments. A file without magic, of another class or machine, or not a shared library is
an ElfError of that kind (the loader skips such a file when it searches); one it cannot read so,
or that passes the reader's bounds (a million dynamic entries, 65,536 names, 64 KiB strings), is
an ElfError too.
@throws ElfError
*/
ElfLoadNames read_load_names(const std::filesystem::path& file);

/// Same, from bytes in memory (for the fuzzer and the tests).
ElfLoadNames parse_load_names(const unsigned char* data, std::size_t size);

/// "dev:ino:size:mtime:ctime" of a file (times as sec.nsec): changes with whatever replaces or
/// writes it (a write moves the change time, which no one can set back, also when the writer
/// keeps the size and sets the modification time back). PluginIndex::file_version and
/// TaskInfo::version: the pool's generation of a library moves with it. A chmod, chown or new
/// hard link moves the change time too.
std::string file_version(const struct stat& st);

/// file_version followed by ":mode:uid:gid": what the trust check judged of the file itself,
/// compared as such (a chmod in the same tick of a coarse clock as the check leaves the change
/// time). Its file_version is a prefix of it (TaskRefs::remember relies on that).
std::string file_identity(const struct stat& st);

/// Name (demangled) of the function symbol covering `vaddr` (an address in the file's own address
/// space) in .symtab or .dynsym, if the file has one.
std::optional<std::string> function_symbol_at(const std::filesystem::path& file, std::uint64_t vaddr);

}  // namespace ferry::detail
