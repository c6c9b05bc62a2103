// SPDX-License-Identifier: BSD-3-Clause
// Reads a trace file (docs/trace-format.md) event by event, in one linear streaming pass.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "json.hpp"

namespace ferry::cli::trace {

/// How a trace file ended, and what the reader left out.
struct ReadResult {
  bool closed = false;             ///< the closing ']' was there
  bool dropped_last = false;       ///< an incomplete (or unreadable) last event was dropped
  std::size_t dropped_line = 0;    ///< where it started
  std::size_t dropped_bytes = 0;
  std::string dropped_why;         ///< "incomplete" or the parser's message
  std::size_t text_after_close_line = 0;  ///< non-zero: text after the ']' (ignored) starts here
  std::size_t error_line = 0;      ///< on failure: the line at fault (1-based)
  std::string error;               ///< on failure: what is wrong, for "FILE:LINE: <error>"
};

/// The largest event the reader keeps in memory: ferry writes events of a few KB at most (messages
/// are cut at 1 KiB); a larger one is refused as not a trace of ferry's.
inline constexpr std::size_t max_event_bytes = std::size_t{16} << 20;

/// The blocks read_trace reads the file in.
inline constexpr std::size_t read_block_bytes = std::size_t{1} << 20;

/// Called with each event object and the line it starts on.
using EventSink = std::function<void(const rj::Value& event, std::size_t line)>;

/**
@brief Reads `path` as a trace: a '[' then JSON objects separated by commas (one per line as ferry
writes them, but any whitespace is accepted), then an optional ']'. A UTF-8 byte order mark at the
file's very start (an editor's "UTF-8 with BOM") is skipped; part of one is not. A trailing comma, a missing
']' and an incomplete last event (a killed host) are accepted: the last event is dropped and
`result` says so. Anything else that is not a trace fails with `result.error` and
`result.error_line`: a file that does not start with '[', an element that is not an object, an
object that does not parse followed by more events, an event whose line ends inside it followed
by more of the trace (a line cut short in the middle: the error says the byte offset where it
ends), nesting deeper than detail::max_json_depth, an event of more than max_event_bytes.
An event may span lines (any whitespace is accepted) as long as it is valid JSON; one found
broken after a line break inside it (a string that holds a line break, a byte that JSON's
grammar does not allow there, the end of the file) is taken as ferry's one-line event cut short
where its first line ends.
Only a regular file is read: a FIFO, a device, a directory or a socket is refused (`result.error`
says which, `result.error_line` is 0) without a read, and opening does not wait (O_NONBLOCK): a FIFO
at `path` with no writer would otherwise block forever.
Memory: the pending event only, at most max_event_bytes (the file is read in blocks); time: linear
in the file's size.
@return false when the file cannot be opened or read, is not a regular file, or is not a trace.
*/
bool read_trace(const std::filesystem::path& path, const EventSink& sink, ReadResult& result);

/// read_trace on a trace already in memory: `text` is handed to the same splitter in blocks of
/// `block_size` bytes, as read_trace hands it the blocks it reads (read_block_bytes): the result
/// must not depend on where the blocks end. For the fuzzer (tests/fuzz/trace_fuzz.hpp), which
/// reads each input whole and in small blocks.
bool read_trace_text(std::string_view text, const EventSink& sink, ReadResult& result,
                     std::size_t block_size = read_block_bytes);

/// Up to `max` bytes of `text` for a message: printable ASCII as it is, other bytes as \xNN.
std::string printable(std::string_view text, std::size_t max = 24);

}  // namespace ferry::cli::trace
