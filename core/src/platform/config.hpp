// SPDX-License-Identifier: BSD-3-Clause
// Every FERRY_* environment variable, in one table, read and validated in one place.
//
// An executor reads the table when it is constructed and refuses a malformed value there, naming
// the variable (std::invalid_argument), instead of failing a task later or quietly falling back.
// Everything else that needs a FERRY_* value asks this module for it, never getenv directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/// One FERRY_* variable: what it means and what ferry does without it (the README's table;
/// Config.readme_lists_every_variable checks that it names each one).
struct ConfigVariable {
  const char* name;
  const char* meaning;
  const char* fallback;
};
FERRY_INTERNAL_API std::span<const ConfigVariable> config_variables();

/// The FERRY_* configuration as the environment holds it now.
struct FERRY_INTERNAL_API Config {
  std::uint64_t max_frame_bytes = std::uint64_t{1} << 30;   // FERRY_MAX_FRAME_BYTES
  std::uint64_t shm_threshold = std::uint64_t{1} << 20;     // FERRY_SHM_THRESHOLD
  std::uint64_t sandbox_shared_bytes = std::uint64_t{4} << 30;  // FERRY_SANDBOX_SHARED_BYTES
  std::chrono::microseconds worker_spin{50};                // FERRY_WORKER_SPIN_US
  std::size_t pipeline_depth = 0;                           // FERRY_PIPELINE_DEPTH; 0 = adaptive
  unsigned max_cpu_count = 0;                               // FERRY_MAX_CPU_COUNT; 0 = none
  bool allow_unsafe_plugins = false;                        // FERRY_ALLOW_UNSAFE_PLUGINS
  bool debug = false;                                       // FERRY_DEBUG
  std::vector<std::filesystem::path> plugin_path;           // FERRY_PLUGIN_PATH
  std::filesystem::path worker;                             // FERRY_WORKER
  std::filesystem::path cache_dir;                          // FERRY_CACHE_DIR (resolved default)
  std::string cxx;                                          // FERRY_CXX
  std::vector<std::string> wrap_flags;                      // FERRY_WRAP_FLAGS
  std::chrono::seconds wrap_timeout{300};                   // FERRY_WRAP_TIMEOUT
  std::size_t wrap_preludes = 4;                            // FERRY_WRAP_PRELUDES
  std::chrono::milliseconds mpi_timeout{3000};              // FERRY_MPI_TIMEOUT_MS
  std::chrono::microseconds mpi_spin{500};                  // FERRY_MPI_SPIN_US
  bool mpi_ship_always = false;                             // FERRY_MPI_SHIP=always
  bool mpi_rings = true;                                    // FERRY_MPI_RINGS
  std::filesystem::path mpi_worker;                         // FERRY_MPI_WORKER
  std::filesystem::path trace;                              // FERRY_TRACE; empty = no trace
  unsigned trace_files = 16;                                // FERRY_TRACE_FILES (Trace::default_files)

  /// "FERRY_X='value': why" for each malformed variable (those keep their defaults above).
  std::vector<std::string> problems;

  /// Reads every variable now. Never throws: see problems.
  static Config read();
  /// Throws std::invalid_argument naming every malformed variable and what it accepts.
  void validate() const;
};

/// `text` split into words as a POSIX shell splits them, with nothing expanded: blanks separate
/// words, '...' quotes everything, "..." everything but \\ \" \$ \` escapes, and a backslash
/// outside quotes escapes the next character (a backslash-newline is nothing, a trailing backslash
/// itself). nullopt when a quote is not closed. FERRY_CXX and FERRY_WRAP_FLAGS are read so
/// ('-DMSG="a b"' is the word -DMSG=a b, as in a shell).
FERRY_INTERNAL_API std::optional<std::vector<std::string>> split_shell_words(std::string_view text);

/// A size in bytes as the table reads it: digits with an optional K, M or G (binary units),
/// "64M", "1048576". nullopt for anything else (empty, negative, junk, overflow).
FERRY_INTERNAL_API std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace ferry::detail
