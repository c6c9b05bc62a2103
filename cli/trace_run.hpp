// SPDX-License-Identifier: BSD-3-Clause
// The files of one FERRY_TRACE run beside a trace: which of them are of the same run of the
// program, and which an earlier (or another) run left (docs/trace-format.md, "File names").
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ferry::cli::trace {

/// What the `ferry` header of a FERRY_TRACE file says of the run that wrote it.
struct RunHeader {
  std::int64_t pid = 0;                  ///< the header's `pid`: the host process
  std::string host;                      ///< `args.host`, cleaned (clean_text), at most 64 bytes
  std::uint64_t sequence = 0;            ///< `args.sequence`: 1 for the run's first trace
  std::int64_t run_started_unix_us = 0;  ///< `args.run_started_unix_us`
  unsigned owner = 0;                    ///< the file's owner (uid)
  bool same_run(const RunHeader& other) const {
    return pid == other.pid && host == other.host && run_started_unix_us == other.run_started_unix_us;
  }
};

/// The header's first bytes that are read: ferry's header is its first three lines, a few hundred
/// bytes (a host name is at most 64).
inline constexpr std::size_t run_header_bytes = 16 * 1024;

/// The files of FERRY_TRACE's names beside a trace that are read at most: FERRY_TRACE_FILES is at
/// most 10,000.
inline constexpr std::size_t max_run_files = 10'000;

/// The run header of the file at `path`, read from its first run_header_bytes: none when it is not
/// a regular file that can be opened at once (a FIFO, a device, a link when `follow` is false), or
/// has no `ferry` header with a `sequence` (a trace of ExecutorOptions::trace or `--trace`, or no
/// trace), or is not `owner`'s when one is given (then nothing of it is read). Reads nothing
/// else of the file.
std::optional<RunHeader> read_run_header(const std::filesystem::path& path, bool follow,
                                         std::optional<unsigned> owner);

/// The names FERRY_TRACE gives the files of `trace`'s path, found in its directory: for
/// DIR/NAME.EXT or DIR/NAME.N.EXT, DIR/NAME.EXT and every DIR/NAME.M.EXT (M from 2, written
/// without leading zeros), `trace` itself among them. At most max_run_files + 1 names (more
/// means there are more).
std::vector<std::filesystem::path> run_file_names(const std::filesystem::path& trace);

/// For `ferry report`: when `trace` is a file of FERRY_TRACE, a sentence naming the run it is of
/// (process, host, start), its place in that run, the run's other files beside it by sequence,
/// and the files beside it of other runs (a later run writes over the first names and leaves the
/// others). Only files of the trace's owner, not links, are counted: in a directory others may
/// write (/tmp), another user's file could say anything of itself. None for a trace that is no
/// FERRY_TRACE file.
std::optional<std::string> run_note(const std::filesystem::path& trace);

}  // namespace ferry::cli::trace
