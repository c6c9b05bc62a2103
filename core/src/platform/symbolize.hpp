// SPDX-License-Identifier: BSD-3-Clause
// A worker's raw stack (addresses and module map) and its symbolization in the host: function,
// and file:line where the module has debug information, with elfutils' libdwfl, which symbolizes
// addresses of another process from its module map (Boost.Stacktrace only knows its own process).
// The stack travels as wire/stack.hpp says.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// Addresses kept of a stack: deeper frames are dropped (the task's own frames come first).
inline constexpr std::size_t max_stack_frames = 64;
/// In a stack's addresses: the next one is the number of frames left out there (a crash's stack
/// deeper than max_stack_frames keeps its innermost and its outermost frames). No frame has
/// address 0: unwinding stops there.
inline constexpr std::uint64_t stack_gap = 0;
/// Bytes of maps lines kept with a stack: a module that does not fit is left unnamed.
inline constexpr std::size_t max_stack_maps = 16 * 1024;

/// One stack of a worker: `pcs` innermost first, `maps` the lines of /proc/<worker>/maps of every
/// module that holds one of them (all the lines of such a module, in the kernel's format).
struct RawStack {
  std::vector<std::uint64_t> pcs;
  std::string maps;
  bool empty() const noexcept { return pcs.empty(); }
};

/// One line of /proc/<pid>/maps, as far as symbolizing needs it.
struct MapsLine {
  std::uint64_t start = 0, end = 0, offset = 0;
  std::uint64_t dev_major = 0, dev_minor = 0, inode = 0;  // the file's (inode 0: none)
  std::string_view path;  // "" for an anonymous mapping, "[stack]", ...
};
/// Parses "start-end perms offset dev inode [path]" (no newline). False when the line is not in
/// that format, or start >= end.
FERRY_INTERNAL_API bool parse_maps_line(std::string_view line, MapsLine& out) noexcept;

/// The modules of the `count` addresses in `pcs`: of the maps text `maps` (lines separated by
/// '\n'), the lines of every file-backed module that holds one of them, written to `out` (capacity
/// `cap`) until it is full; a module that does not fit is left out whole, and so is a last line
/// without its newline (cut short: `maps` filled its buffer). Returns the bytes written.
/// Async-signal-safe (no allocation), for the crash handler.
FERRY_INTERNAL_API std::size_t select_modules(const char* maps, std::size_t size, const std::uint64_t* pcs,
                                              std::size_t count, char* out, std::size_t cap) noexcept;

/// From now on, in this process, symbolize() reads no file at or under `dir` (a directory or a
/// file; nor at or under what it resolves to): a sandboxed worker can write there, so what is
/// there may be built to attack the DWARF reader of the host, which runs without the sandbox.
/// Frames in such a module stay unnamed. The pool calls it for its sandbox's writable paths.
FERRY_INTERNAL_API void never_symbolize_under(const std::string& dir);

/// One line per frame, innermost first:
///   "#0  crash_in_named_function(int) at /src/plugins/crash/crash.cpp:42 (libferry_plugin_crash.so)"
///   "#5  ?? (libc.so.6+0x2724a)"
/// The frames below the task's entry point (the worker loop) are summed up in one last line.
/// `exact_first`: pcs[0] is the interrupted instruction (a crash), not a return address. Only
/// regular files are opened, none through /proc (a magic link reaches a task's memfd), none without
/// a directory entry (a memfd, a deleted file) and none under a never_symbolize_under() path; a
/// module that cannot be read leaves its frames unnamed. "" for an empty stack.
FERRY_INTERNAL_API std::string symbolize(const RawStack& stack, bool exact_first);

/// Addresses looked up through libdw so far in this process. An address of a module file looked
/// up before (the same file, at the same offset from the module's start) is taken from a memo.
FERRY_INTERNAL_API std::size_t symbolize_lookups() noexcept;

/// Bytes shown of a frame's function name, and of its file name: the rest is cut, the text says
/// how much. A module's symbol table can hold names of any length (a template's demangled name
/// runs to megabytes), and a stack has up to 64 addresses of 17 frames each.
inline constexpr std::size_t max_frame_name = 4096;

/// What TaskError and TerminatedWorkerError hold: the raw stack, symbolized the first time it is
/// asked for (~0.1 s: a failure nobody looks at costs nothing), or a ready text.
class FERRY_INTERNAL_API RemoteStack {
 public:
  RemoteStack(RawStack raw, bool exact_first);
  explicit RemoteStack(std::string text) : text_(std::move(text)), ready_(true) {}
  /// The stack of a failure, shared with every live one equal to it (same addresses, same
  /// modules: a task that fails the same way in the same worker again and again), whose text is
  /// then made once; a stack with other addresses shares the module map of an equal one. A map
  /// over 100,000 failing items held 100,000 copies of a few KiB of maps lines.
  static std::shared_ptr<const RemoteStack> make(RawStack raw, bool exact_first);
  /// Thread-safe; never throws (a failure to symbolize is said in the text).
  const std::string& text() const noexcept;
  /// The module map's text, as shared (make): equal maps are one string.
  const std::string* maps() const noexcept { return maps_.get(); }

 private:
  std::vector<std::uint64_t> pcs_;
  std::shared_ptr<const std::string> maps_;
  bool exact_first_ = false;
  mutable std::once_flag once_;
  mutable std::string text_;
  bool ready_ = false;
};

}  // namespace ferry::detail
