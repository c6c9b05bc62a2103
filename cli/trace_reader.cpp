// SPDX-License-Identifier: BSD-3-Clause
// The trace reader: splits the array into event objects without a recursive parser, then parses
// each object on its own with the CLI's bounded parser (cli/json.hpp).
//
// Why split first: a trace may come from a host that was killed (no ']', a partial last line), and
// it may be hostile (deep nesting, binary, a huge file). The splitter is a small state machine
// over bytes that tracks strings and nesting, so it finds where each object ends in one pass,
// refuses nesting beyond detail::max_json_depth before any parser recurses, and keeps in memory
// only the object being read.
//
// Why it also follows JSON's grammar (keys, colons, commas, values): ferry writes one event a
// line, so a line cut short in the middle of the file (a host that crashed while writing, a copy
// cut short) leaves an event open, and counting brackets alone took in the lines after it as
// more of that event: the rest of the file became one "incomplete last event", dropped. A string
// cannot hold a line break, and the next line's '{' cannot continue an object where a key is due;
// so an event found broken after a line break inside it ends where its first line does, and what
// follows is read again as the trace.
#include "trace_reader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

namespace ferry::cli::trace {

std::string printable(std::string_view text, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (text.size() > max) out += "...";
  return out;
}

namespace {

bool space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/// What an error quotes of the file at the byte at fault.
constexpr std::size_t quoted_bytes = 24;

/// The splitter's state between two blocks of the file.
class Splitter {
 public:
  Splitter(const EventSink& sink, ReadResult& result) : sink_(sink), result_(result) {}

  /// Feeds the next block. False once the file is known not to be a trace (result_.error set),
  /// or once the text after ']' starts (the rest is not read).
  bool feed(std::string_view block) {
    buffer_.append(block);
    if (quote_) return quote_ready(false);
    if (!scan()) return false;
    if (quote_) return true;  // the error waits for the bytes it quotes: nothing more is read or erased
    // Keep only the event being read: what lies before it has been handed on.
    std::size_t keep_from = state_ == State::event ? event_start_ : pos_;
    buffer_.erase(0, keep_from);
    pos_ -= keep_from;
    offset_ += keep_from;
    if (state_ == State::event) {
      event_start_ = 0;
      if (event_newline_ != no_newline) event_newline_ -= keep_from;
    }
    return true;
  }

  /// The end of the file: an event still open, or one that did not parse, was the last one.
  bool finish() {
    if (quote_) return quote_ready(true);
    if (state_ == State::before) {
      if (bom_ == bom.size())
        return fail(1, "not a trace file: it holds nothing but a byte order mark, and a trace starts with '['");
      if (bom_ > 0)
        return fail(1, "not a trace file: it is \"" + printable(bom.substr(0, bom_)) + "\", and a trace starts with '['");
      return fail(1, "not a trace file: it is empty, and a trace starts with '['");
    }
    if (state_ == State::event && event_newline_ != no_newline) {
      // Still open at the end, over more than one line: as ferry writes them, cut where its first
      // line ends; the lines after it may only end the file (',', ']').
      cut_at_first_newline();
      if (!scan()) return stopped_after_close();
      if (quote_) return quote_ready(true);
    }
    if (state_ == State::event) {
      drop(event_line_, buffer_.size() - event_start_, "incomplete");
    } else if (unparsed_) {
      drop(unparsed_->line, unparsed_->bytes, unparsed_->why);
    }
    return true;
  }

  bool stopped_after_close() const { return state_ == State::after; }

 private:
  enum class State { before, between, event, after };

  struct Unparsed {
    std::size_t line = 0;
    std::size_t bytes = 0;
    std::string why;
    std::size_t cut_at = 0;  ///< non-zero: the event's line ended inside it, at this offset in the file
  };

  /// Where JSON's grammar is inside an event: what the next token may be.
  enum class Expect { key_or_close, key, colon, value_or_close, value, comma_or_close };

  static constexpr std::size_t no_newline = static_cast<std::size_t>(-1);

  /// An error that quotes the file from the byte at fault: `head`, the quote, `tail`.
  struct Quote {
    std::size_t line = 0;
    std::size_t at = 0;  ///< where the quote starts in buffer_
    std::string head, tail;
  };

  /// A byte outside an event, not white space.
  bool token(char c) {
    if (state_ == State::before) {
      if (c == '[') {
        state_ = State::between;
        return true;
      }
      return fail_quoting("not a trace file: it starts with \"", "\" where a trace starts with '['");
    }
    if (state_ == State::after) {
      result_.text_after_close_line = line_;
      return false;
    }
    // between events. An object that did not parse is an error once anything follows it: only
    // the last line of the file can be a partial one. After a line cut short, the closing ']'
    // may follow: what was cut was the last event.
    if (unparsed_ && unparsed_->cut_at != 0 && c != ',' && c != ']') {
      return fail(unparsed_->line, "an event cut short at byte offset " + std::to_string(unparsed_->cut_at) +
                                       " (where its line ends), followed by more of the trace");
    }
    if (unparsed_ && unparsed_->cut_at == 0 && c != ',') {
      return fail(unparsed_->line, "an event that is not valid JSON (" + unparsed_->why +
                                       "), followed by more of the trace");
    }
    if (c == ',') return true;  // also a trailing one, and repeated ones
    if (c == ']') {
      result_.closed = true;
      state_ = State::after;
      return true;
    }
    if (c == '{') {
      state_ = State::event;
      event_start_ = pos_;
      event_line_ = line_;
      event_newline_ = no_newline;
      depth_ = 1;
      in_string_ = escaped_ = in_scalar_ = false;
      grammar_ = true;
      objects_.assign(1, true);
      expect_ = Expect::key_or_close;
      return true;
    }
    return fail_quoting("expected an event object ('{') or the closing ']', found \"", "\"");
  }

  /// A byte inside an event object.
  bool event_byte(char c) {
    if (pos_ - event_start_ >= max_event_bytes)
      return fail(event_line_, "an event larger than " + std::to_string(max_event_bytes >> 20) + " MiB");
    if (c == '\n' && event_newline_ == no_newline) event_newline_ = pos_;
    if (in_string_ && c == '\n') {
      // A string cannot hold a line break (nor can a backslash escape one): the line was cut.
      cut_at_first_newline();
      return true;
    }
    if (!in_string_ && grammar_ && !follows_grammar(c)) {
      // Broken on a later line than it started: its line was cut, and that line is more of the
      // trace. Broken on its own line, it is left to the parser, as any event that is not JSON.
      if (event_newline_ != no_newline && event_newline_ < pos_) {
        cut_at_first_newline();
        return true;
      }
      grammar_ = false;
    }
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      return true;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      if (++depth_ > detail::max_json_depth)
        return fail(line_, "an event nested deeper than " + std::to_string(detail::max_json_depth) +
                               " levels");
    } else if (c == '}' || c == ']') {
      if (--depth_ == 0) {
        state_ = State::between;
        complete(std::string_view(buffer_).substr(event_start_, pos_ + 1 - event_start_));
      }
    }
    return true;
  }

  /// Whether `c`, outside a string, can come next in the event (its structure only: what a
  /// string, number or literal holds is the parser's to judge).
  bool follows_grammar(char c) {
    const bool scalar = !space(c) && c != '{' && c != '}' && c != '[' && c != ']' && c != ':' && c != ',' && c != '"';
    const bool continues_scalar = scalar && in_scalar_;
    in_scalar_ = scalar;
    if (continues_scalar || space(c)) return true;
    const bool value_due = expect_ == Expect::value || expect_ == Expect::value_or_close;
    switch (c) {
      case '"':
        if (expect_ == Expect::key || expect_ == Expect::key_or_close) {
          expect_ = Expect::colon;
          return true;
        }
        if (!value_due) return false;
        expect_ = Expect::comma_or_close;
        return true;
      case ':':
        if (expect_ != Expect::colon) return false;
        expect_ = Expect::value;
        return true;
      case ',':
        if (expect_ != Expect::comma_or_close) return false;
        expect_ = objects_.back() ? Expect::key : Expect::value;
        return true;
      case '{':
      case '[':
        if (!value_due) return false;
        objects_.push_back(c == '{');
        expect_ = c == '{' ? Expect::key_or_close : Expect::value_or_close;
        return true;
      case '}':
      case ']': {
        const bool object = c == '}';
        if (objects_.empty() || objects_.back() != object) return false;
        if (expect_ != Expect::comma_or_close && expect_ != (object ? Expect::key_or_close : Expect::value_or_close))
          return false;
        objects_.pop_back();
        expect_ = Expect::comma_or_close;
        return true;
      }
      default:  // the first byte of a number or a literal
        if (!value_due) return false;
        expect_ = Expect::comma_or_close;
        return true;
    }
  }

  /// The event being read is cut short where its first line ends: it is dropped if nothing but
  /// the end of the file follows, and the bytes after that line break are read again as the trace.
  void cut_at_first_newline() {
    unparsed_ = Unparsed{event_line_, event_newline_ - event_start_, "incomplete", offset_ + event_newline_};
    state_ = State::between;
    line_ = event_line_;
    pos_ = event_newline_;  // scan() counts this line break and goes on after it
  }

  /// Whether the byte at pos_ belongs to a byte order mark at the file's very start, which is
  /// skipped: a trace an editor saved as "UTF-8 with BOM" was refused as not starting with '['.
  /// A file that starts with part of one only is no trace: true, with `failed` set once
  /// result_.error is (or with quote_ set while the error waits for the bytes it quotes).
  bool byte_order_mark(char c, bool& failed) {
    if (state_ != State::before || bom_ == bom.size() || offset_ + pos_ != bom_) return false;
    if (c == bom[bom_]) {
      ++bom_;
      return true;
    }
    if (bom_ == 0) return false;
    // EF BB then anything else: no text of a trace, and no BOM either. Quoted from the file's
    // first byte, whichever block the mark's bytes came in.
    failed = !fail_quoting("not a trace file: it starts with \"" + printable(bom.substr(0, bom_)),
                           "\" where a trace starts with '['");
    if (!failed) bom_ = bom.size();  // the quote waits for its bytes: this byte is not seen again
    return true;
  }

  /// Reads buffer_ from pos_ on. False once the file is known not to be a trace, or once the
  /// text after ']' starts; true with quote_ set when an error waits for the bytes it quotes.
  bool scan() {
    for (; pos_ < buffer_.size(); ++pos_) {
      const char c = buffer_[pos_];
      bool failed = false;
      if (byte_order_mark(c, failed)) {
        if (failed) return false;
        if (quote_) return true;
        continue;
      }
      if (state_ == State::event) {
        if (!event_byte(c)) return false;
      } else if (space(c)) {
        // between tokens
      } else if (!token(c)) {
        return false;
      } else if (quote_) {
        return true;
      }
      // buffer_[pos_], not c: an event cut short moves pos_ back to the line break that cut it.
      if (buffer_[pos_] == '\n') ++line_;
    }
    return true;
  }

  void complete(std::string_view text) {
    rj::Document doc;
    std::string error;
    if (!json::parse(text, doc, error)) {
      unparsed_ = Unparsed{event_line_, text.size(), error};
      return;
    }
    sink_(doc, event_line_);
  }

  void drop(std::size_t line, std::size_t bytes, std::string why) {
    result_.dropped_last = true;
    result_.dropped_line = line;
    result_.dropped_bytes = bytes;
    result_.dropped_why = std::move(why);
  }

  /// An error at the byte at pos_ that quotes what follows it (printable()'s 24 bytes): that may
  /// lie in the next block, so the error is complete once so much more is read or the file ends,
  /// and the message is the same wherever the blocks end. True while it waits.
  bool fail_quoting(std::string head, std::string tail) {
    quote_ = Quote{line_, pos_, std::move(head), std::move(tail)};
    return quote_ready(false);
  }

  bool quote_ready(bool at_end) {
    std::string_view rest = std::string_view(buffer_).substr(quote_->at);
    if (!at_end && rest.size() <= quoted_bytes) return true;  // printable() adds "..." beyond
    return fail(quote_->line, quote_->head + printable(rest, quoted_bytes) + quote_->tail);
  }

  bool fail(std::size_t line, std::string message) {
    result_.error_line = line;
    result_.error = std::move(message);
    return false;
  }

  /// UTF-8's byte order mark (U+FEFF), which a trace may start with.
  static constexpr std::string_view bom = "\xEF\xBB\xBF";

  const EventSink& sink_;
  ReadResult& result_;
  std::size_t bom_ = 0;  ///< bytes of a byte order mark read at the file's start
  std::string buffer_;
  std::size_t pos_ = 0;
  State state_ = State::before;
  std::size_t line_ = 1;
  std::size_t event_start_ = 0;
  std::size_t event_line_ = 0;
  std::size_t event_newline_ = no_newline;  ///< the event's first line break, in buffer_
  std::size_t offset_ = 0;                  ///< of buffer_'s first byte in the file
  std::size_t depth_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
  bool in_scalar_ = false;                  ///< the last byte was part of a number or literal
  bool grammar_ = true;                     ///< no byte of the event has broken its grammar yet
  Expect expect_ = Expect::key_or_close;
  std::vector<bool> objects_;               ///< the open containers: true for an object
  std::optional<Unparsed> unparsed_;
  std::optional<Quote> quote_;
};

/// What a file that is not a regular one is, for the error that refuses it.
const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "of another kind";
}

/// Opens `path` for reading if it is a regular file: -1 with `error` set otherwise. O_NONBLOCK so
/// that opening a FIFO does not wait for a writer (a FIFO at the path hung `ferry report` before a
/// byte was read), O_NOCTTY so that a terminal device is not made the controlling one; what fstat
/// says is not a regular file is refused, then reads block again.
int open_regular(const std::filesystem::path& path, std::string& error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    error = std::strerror(errno);
    return -1;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    error = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    error = std::string("not a regular file (") + file_kind(st.st_mode) + ")";
  } else if (int flags = ::fcntl(fd, F_GETFL); flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    error = std::strerror(errno);
  } else {
    return fd;
  }
  ::close(fd);
  return -1;
}

}  // namespace

bool read_trace(const std::filesystem::path& path, const EventSink& sink, ReadResult& result) {
  result = ReadResult{};
  int fd = open_regular(path, result.error);
  if (fd < 0) return false;
  Splitter splitter(sink, result);
  std::string block(read_block_bytes, '\0');
  bool ok = true;
  for (;;) {
    ssize_t n = ::read(fd, block.data(), block.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      result.error = std::strerror(errno);  // EIO
      ok = false;
      break;
    }
    if (n == 0) {
      ok = splitter.finish();
      break;
    }
    if (!splitter.feed(std::string_view(block.data(), static_cast<std::size_t>(n)))) {
      ok = splitter.stopped_after_close();  // text after ']' is ignored, not an error
      break;
    }
  }
  ::close(fd);
  return ok;
}

bool read_trace_text(std::string_view text, const EventSink& sink, ReadResult& result, std::size_t block_size) {
  result = ReadResult{};
  Splitter splitter(sink, result);
  block_size = std::max<std::size_t>(block_size, 1);
  // The same loop as read_trace's, over blocks of the text instead of reads of the file.
  for (;;) {
    if (text.empty()) return splitter.finish();
    std::string_view block = text.substr(0, block_size);
    text.remove_prefix(block.size());
    if (!splitter.feed(block)) return splitter.stopped_after_close();
  }
}

}  // namespace ferry::cli::trace
