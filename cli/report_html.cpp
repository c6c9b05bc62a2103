// SPDX-License-Identifier: BSD-3-Clause
// The report page: the template (cli/report/, embedded at build time) with the trace's figures as
// JSON, streamed to the output file.
//
// The JSON goes into a <script type="application/json"> element, where the HTML parser looks only
// for "</script" (and "<!--" with "<script"): every '<' of the JSON is written \u003c, so nothing
// taken from the trace can end that element or start markup, and JSON.parse reads the same text
// back. '>' and '&' are escaped too, so that the text is inert in any HTML context.
// DEL is escaped as well (\u007f), and the characters detail::escaped_on_terminal lists (the C1
// controls, the bidirectional controls, the line and paragraph separators) are written as text,
// \\u202e in the JSON, which JSON.parse reads as the six characters \u202e: `-o -` writes the page
// to stdout, maybe a terminal, which would act on them or show ferry's own text reordered, and
// the browser would show the report's own words reordered by a trace's text. So the script needs
// no list of its own: no string it is given holds one of them.
#include "report_html.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include "platform/format.hpp"
#include "report_assets.hpp"

namespace ferry::cli::trace {

namespace {

/// Buffered writes to a FILE*.
class Output {
 public:
  explicit Output(std::FILE* f) : file_(f) { buffer_.reserve(capacity); }
  ~Output() { flush(); }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  void raw(std::string_view s) {
    if (buffer_.size() + s.size() > capacity) flush();
    if (s.size() > capacity) {
      ok_ = ok_ && std::fwrite(s.data(), 1, s.size(), file_) == s.size();
    } else {
      buffer_.append(s);
    }
  }
  void put(char c) {
    buffer_.push_back(c);
    if (buffer_.size() >= capacity) flush();
  }
  bool flush() {
    if (!buffer_.empty()) ok_ = ok_ && std::fwrite(buffer_.data(), 1, buffer_.size(), file_) == buffer_.size();
    buffer_.clear();
    return ok_;
  }

 private:
  static constexpr std::size_t capacity = 1 << 16;
  std::FILE* file_;
  std::string buffer_;
  bool ok_ = true;
};

/// A RapidJSON output stream onto Output for characters that occur only inside strings in JSON
/// text:
/// - '<', '>' and '&' as \uXXXX (the same character to JSON.parse): no text of the trace can end
///   the data element or start markup;
/// - DEL (0x7F) as \u007f, so that the page, written with -o - to a terminal, holds no byte a
///   terminal acts on (RapidJSON escapes the C0 controls itself);
/// - what detail::escaped_on_terminal lists (the C1 controls U+0080 to U+009F, UTF-8 C2 80 to C2
///   9F, U+009B being CSI; the bidirectional controls U+061C, U+200E, U+200F, U+202A to U+202E,
///   U+2066 to U+2069; the line and paragraph separators U+2028, U+2029) as the text \uXXXX (an
///   escaped backslash, then uXXXX): a terminal acts on them or shows the text after them
///   reordered, and so would the page, where the script shows each as that text.
/// A lead byte that may start one of them (C2, D8, E2) is held back, with what follows it, until
/// the character is known.
class HtmlSafeJsonStream {
 public:
  using Ch = char;
  explicit HtmlSafeJsonStream(Output& out) : out_(out) {}
  ~HtmlSafeJsonStream() { Flush(); }
  HtmlSafeJsonStream(const HtmlSafeJsonStream&) = delete;
  HtmlSafeJsonStream& operator=(const HtmlSafeJsonStream&) = delete;

  void Put(char c) {
    const auto u = static_cast<unsigned char>(c);
    if (held_n_ == 0) {
      switch (u) {
        case '<':
        case '>':
        case '&':
        case 0x7F: escape(u); break;
        case 0xC2:
        case 0xD8:
        case 0xE2: held_[held_n_++] = u; break;
        default: out_.put(c);
      }
      return;
    }
    held_[held_n_++] = u;
    const unsigned lead = held_[0];
    // The list is escaped_on_terminal's, asked of the bytes held when they are one well-formed
    // character (a C1 control or U+061C in two; after E2 80 or E2 81, a third byte may make a
    // bidirectional control or U+2028/U+2029).
    const std::string_view held(reinterpret_cast<const char*>(held_), held_n_);
    auto escaped = [&] { return detail::utf8_length(held, 0) == held_n_ && detail::escaped_on_terminal(held, 0, held_n_); };
    if (held_n_ == 2) {
      if (escaped())
        return done((lead & 0x1Fu) << 6 | (u & 0x3Fu));
      if (lead == 0xE2 && (u == 0x80 || u == 0x81)) return;  // maybe: one more
      return give_back();
    }
    if (escaped())
      return done((lead & 0x0Fu) << 12 | (held_[1] & 0x3Fu) << 6 | (u & 0x3Fu));
    give_back();
  }
  /// RapidJSON calls it when the value is complete; bytes still held (not in valid JSON of UTF-8
  /// text, which never ends inside a character) go out as they were.
  void Flush() {
    for (unsigned i = 0; i < held_n_; ++i) out_.put(static_cast<char>(held_[i]));
    held_n_ = 0;
  }

 private:
  void escape(unsigned code) {
    static constexpr char hex[] = "0123456789abcdef";
    const char text[] = {'\\', 'u', hex[code >> 12 & 15], hex[code >> 8 & 15], hex[code >> 4 & 15], hex[code & 15]};
    out_.raw(std::string_view(text, sizeof text));
  }
  /// One of escaped_on_terminal's characters, as the text \uXXXX.
  void done(unsigned code) {
    held_n_ = 0;
    static constexpr char hex[] = "0123456789abcdef";
    const char text[] = {'\\', '\\', 'u', hex[code >> 12 & 15], hex[code >> 8 & 15], hex[code >> 4 & 15], hex[code & 15]};
    out_.raw(std::string_view(text, sizeof text));
  }
  /// The held lead byte was not one of those characters: it goes out as it was, and the bytes
  /// after it are read again (one of them may start a character to escape).
  void give_back() {
    const unsigned n = held_n_;
    unsigned char rest[3];
    for (unsigned i = 1; i < n; ++i) rest[i] = held_[i];
    held_n_ = 0;
    out_.put(static_cast<char>(held_[0]));
    for (unsigned i = 1; i < n; ++i) Put(static_cast<char>(rest[i]));
  }

  Output& out_;
  unsigned char held_[3] = {};
  unsigned held_n_ = 0;
};

using Writer = rj::Writer<HtmlSafeJsonStream>;

void string(Writer& w, std::string_view s) { w.String(s.data(), static_cast<rj::SizeType>(s.size())); }
void key(Writer& w, const char* k) { w.Key(k); }
/// A number, or null when it is not finite: times from a hostile trace can add up past the
/// largest double (1e308 + 1e308), and RapidJSON would write a bare Infinity, which JSON.parse
/// refuses, and with it the whole page's data.
void number(Writer& w, double v) {
  if (std::isfinite(v)) {
    w.Double(v);
  } else {
    w.Null();
  }
}
/// A time or size, or null when absent (negative).
void maybe(Writer& w, double v) {
  if (v < 0) {
    w.Null();
  } else {
    number(w, v);
  }
}
void index(Writer& w, std::int64_t i) {
  if (i < 0) {
    w.Null();
  } else {
    w.Int64(i);
  }
}

/// A value already written as JSON text by the summary (always valid JSON). A string is written
/// again from its text: json::quote wrote the characters escaped_on_terminal lists as JSON escapes
/// (\u202e), which the page writes as text (\\u202e) instead.
void json_text(Writer& w, const std::string& text) {
  if (!text.empty() && text.front() == '"') {
    rj::Document doc;
    std::string error;
    if (json::parse(text, doc, error) && doc.IsString()) {
      w.String(doc.GetString(), doc.GetStringLength());
      return;
    }
  }
  w.RawValue(text.data(), text.size(), rj::kStringType);
}

const char* kind_name(Mark::Kind k) {
  switch (k) {
    case Mark::Kind::start: return "start";
    case Mark::Kind::exit: return "exit";
    case Mark::Kind::crash: return "crash";
  }
  return "start";
}

const char* end_name(Track::End e) {
  switch (e) {
    case Track::End::alive: return "";
    case Track::End::exit: return "exit";
    case Track::End::crash: return "crash";
  }
  return "";
}

}  // namespace

Page::Page(const Summary& s, const ReportLimits& l)
    : summary(s), limits(l), tracks(std::min(s.tracks.size(), l.max_tracks)) {
  for (const Slice& sl : s.slices) {
    if (slices.size() == limits.max_slices) break;
    if (sl.track < tracks) slices.push_back(&sl);
  }
  for (const Mark& m : s.marks) {
    if (marks.size() == limits.max_marks) break;
    if (m.track < tracks) marks.push_back(&m);
  }
  for (const Failure& f : s.failures) {
    if (failures.size() == limits.max_failures) break;
    failures.push_back(&f);
  }

  // The tasks: the first max_tasks rows by name; the others, the Summary's and its rows past
  // those, together in one row.
  const std::size_t listed = std::min(s.tasks.size(), limits.max_tasks);
  for (std::size_t i = 0; i < listed; ++i) tasks.push_back(&s.tasks[i]);
  if (listed < s.tasks.size()) {
    merged_others_ = s.other_tasks;
    other_task_names = s.other_task_names + (s.tasks.size() - listed);
    for (std::size_t i = listed; i < s.tasks.size(); ++i) {
      const TaskFigures& t = s.tasks[i];
      merged_others_.calls += t.calls;
      merged_others_.items += t.items;
      merged_others_.failed += t.failed;
      merged_others_.never_ran += t.never_ran;
      merged_others_.durations.insert(merged_others_.durations.end(), t.durations.begin(), t.durations.end());
      merged_others_.waits.insert(merged_others_.waits.end(), t.waits.begin(), t.waits.end());
    }
    std::sort(merged_others_.durations.begin(), merged_others_.durations.end());
    std::sort(merged_others_.waits.begin(), merged_others_.waits.end());
    other_tasks = &merged_others_;
  } else if (s.tasks_folded()) {
    other_tasks = &s.other_tasks;
    other_task_names = s.other_task_names;
  }

  // The texts. Those of the failures listed are all on the page (max_failures bounds them); those
  // of the marks, then of the calls drawn, in the page's order, while they fit in max_text_bytes
  // (each text counted once, however many refer to it). A text the summary let go (which it does
  // as it reads, choosing them as here) is left out; one that would have fit is counted.
  const auto& texts = s.strings.strings();
  enum Fate : std::uint8_t { unused, shown, left_out };
  std::vector<Fate> fate(texts.size(), unused);
  for (const Failure* f : failures)
    for (std::int32_t i : {f->error, f->message, f->task_name})
      if (i >= 0) fate[static_cast<std::size_t>(i)] = s.strings.let_go(i) ? left_out : shown;
  std::size_t spent = 0;
  auto fits = [&](std::int32_t i) {
    if (i < 0) return true;
    Fate& at = fate[static_cast<std::size_t>(i)];
    if (at == unused) {
      const bool let_go = s.strings.let_go(i);
      const std::size_t bytes = let_go ? s.strings.let_go_bytes(i) : page_text_bytes(texts[static_cast<std::size_t>(i)]);
      const bool room = bytes <= limits.max_text_bytes - std::min(spent, limits.max_text_bytes);
      at = room && !let_go ? shown : left_out;
      if (at == shown) spent += bytes;
      if (room && let_go) ++texts_let_go;
    }
    return at == shown;
  };
  for (const Mark* m : marks) {
    const bool reason = fits(m->reason), error = fits(m->error);
    texts_left_out_marks += !(reason && error);
  }
  for (const Slice* sl : slices) {
    const bool error = fits(sl->error), message = fits(sl->message), first_input = fits(sl->first_input);
    texts_left_out_slices += !(error && message && first_input);
  }

  // Numbered in the order the page's rows refer to them.
  string_index_.assign(texts.size(), -1);
  auto add = [&](const std::string* text) {
    strings.push_back(text);
    return static_cast<std::int32_t>(strings.size() - 1);
  };
  auto use = [&](std::int32_t i) {
    if (i < 0) return;
    std::int32_t& to = string_index_[static_cast<std::size_t>(i)];
    if (to >= 0) return;
    if (fate[static_cast<std::size_t>(i)] != left_out) {
      to = add(&texts[static_cast<std::size_t>(i)]);
      return;
    }
    if (left_out_index_ < 0) {
      left_out_text_ = "(left out: the page holds " + detail::format_size(limits.max_text_bytes) +
                       " of the texts of the calls and marks it draws)";
      left_out_index_ = add(&left_out_text_);
    }
    to = left_out_index_;
  };
  for (const Slice* sl : slices) {
    use(sl->error);
    use(sl->message);
    use(sl->first_input);
  }
  for (const Mark* m : marks) {
    use(m->reason);
    use(m->error);
  }
  task_name_index_.assign(s.tasks.size() - listed, -1);
  for (const Failure* f : failures) {
    use(f->error);
    use(f->message);
    if (f->task == other_task) {
      use(f->task_name);
    } else if (f->task >= listed && f->task < s.tasks.size()) {
      std::int32_t& to = task_name_index_[f->task - listed];
      if (to < 0) to = add(&s.tasks[f->task].name);
    }
  }
}

std::int64_t Page::text(std::int32_t i) const { return i < 0 ? -1 : string_index_[static_cast<std::size_t>(i)]; }

std::int64_t Page::task(std::uint32_t i) const {
  return i < tasks.size() ? static_cast<std::int64_t>(i) : other_tasks ? static_cast<std::int64_t>(tasks.size()) : -1;
}

std::int64_t Page::failure_task_name(const Failure& f) const {
  if (f.task == other_task) return text(f.task_name);
  if (f.task < tasks.size() || f.task >= summary.tasks.size()) return -1;
  return task_name_index_[f.task - tasks.size()];
}

namespace {

void write_task(Writer& w, const TaskFigures& t, bool other, std::size_t other_names = 0) {
  w.StartObject();
  key(w, "name");
  string(w, t.name);
  if (other) {
    key(w, "other");
    w.Bool(true);
    key(w, "names");
    w.Uint64(other_names);
  }
  key(w, "calls");
  w.Uint64(t.calls);
  key(w, "items");
  w.Uint64(t.items);
  key(w, "failed");
  w.Uint64(t.failed);
  key(w, "never_ran");
  w.Uint64(t.never_ran);
  key(w, "p50");
  number(w, percentile(t.durations, 0.5));
  key(w, "p90");
  number(w, percentile(t.durations, 0.9));
  key(w, "max");
  number(w, t.durations.empty() ? 0 : t.durations.back());
  key(w, "wait_n");
  w.Uint64(t.waits.size());
  key(w, "wait_p50");
  number(w, percentile(t.waits, 0.5));
  key(w, "wait_max");
  number(w, t.waits.empty() ? 0 : t.waits.back());
  w.EndObject();
}

void write_data(Writer& w, std::string_view file, std::string_view generator, const Page& page,
                const std::vector<Note>& notes) {
  const Summary& s = page.summary;
  const std::size_t tracks_drawn = page.tracks;
  w.StartObject();
  key(w, "file");
  string(w, clean_text(file, 1000));
  key(w, "generator");
  string(w, clean_text(generator, 1000));
  key(w, "process");
  string(w, s.process_name);
  key(w, "meta");
  w.StartArray();
  for (const auto& [name, value] : s.meta) {
    w.StartArray();
    string(w, name);
    json_text(w, value);
    w.EndArray();
  }
  w.EndArray();
  key(w, "notes");
  w.StartArray();
  for (const Note& n : notes) {
    w.StartArray();
    string(w, n.text);
    string(w, n.bad ? "bad" : "warn");
    w.EndArray();
  }
  w.EndArray();
  key(w, "begin");
  number(w, s.begin);
  key(w, "end");
  number(w, s.end);
  key(w, "strings");
  w.StartArray();
  for (const std::string* text : page.strings) string(w, *text);
  w.EndArray();

  key(w, "tasks");
  w.StartArray();
  for (const TaskFigures* task : page.tasks) write_task(w, *task, false);
  if (page.other_tasks) write_task(w, *page.other_tasks, true, page.other_task_names);
  w.EndArray();

  key(w, "tracks");
  w.StartArray();
  for (std::size_t i = 0; i < tracks_drawn; ++i) {
    const Track& t = s.tracks[i];
    double begin = t.life_begin();
    w.StartObject();
    key(w, "tid");
    w.Int64(t.tid);
    key(w, "label");
    string(w, t.label);
    key(w, "start");
    maybe(w, t.start);
    key(w, "end");
    maybe(w, t.end);
    key(w, "end_kind");
    string(w, end_name(t.end_kind));
    key(w, "reason");
    string(w, t.end_reason);
    key(w, "error");
    string(w, t.end_error);
    key(w, "busy");
    number(w, t.busy);
    key(w, "life_begin");
    maybe(w, begin);
    key(w, "life_end");
    if (begin < 0) {
      w.Null();
    } else {
      number(w, t.end >= 0 ? t.end : s.end);
    }
    key(w, "slices");
    w.Uint64(t.slices);
    key(w, "failed");
    w.Uint64(t.failed);
    w.EndObject();
  }
  w.EndArray();
  key(w, "tracks_total");
  w.Uint64(s.tracks_total);

  // Slices: the first max_slices by start time among the drawn tracks.
  key(w, "slices");
  w.StartArray();
  for (const Slice* slice : page.slices) {
    const Slice& sl = *slice;
    w.StartArray();
    number(w, sl.ts);
    number(w, sl.dur);
    w.Uint(sl.track);
    index(w, page.task(sl.task));
    index(w, sl.call);
    w.Uint64(sl.items);
    maybe(w, sl.wait);
    maybe(w, sl.arg_bytes);
    maybe(w, sl.result_bytes);
    index(w, page.text(sl.error));
    index(w, page.text(sl.message));
    index(w, page.text(sl.first_input));
    w.EndArray();
  }
  w.EndArray();
  key(w, "slices_total");
  w.Uint64(s.slices_total);

  key(w, "marks");
  w.StartArray();
  for (const Mark* mark : page.marks) {
    const Mark& m = *mark;
    w.StartArray();
    number(w, m.ts);
    w.Uint(m.track);
    string(w, kind_name(m.kind));
    index(w, page.text(m.reason));
    index(w, page.text(m.error));
    w.EndArray();
  }
  w.EndArray();

  key(w, "failures");
  w.StartArray();
  for (const Failure* failure : page.failures) {
    const Failure& f = *failure;
    w.StartArray();
    number(w, f.ts);
    index(w, f.call);
    index(w, page.task(f.task));
    if (f.track >= 0) {
      string(w, s.tracks[static_cast<std::size_t>(f.track)].label);
    } else if (f.track_label >= 0) {
      string(w, s.strings.strings()[static_cast<std::size_t>(f.track_label)]);  // a track not kept
    } else {
      w.Null();
    }
    index(w, page.text(f.error));
    index(w, page.text(f.message));
    index(w, page.failure_task_name(f));
    w.EndArray();
  }
  w.EndArray();
  key(w, "failures_total");
  w.Uint64(s.failures_total);

  key(w, "counters");
  w.StartObject();
  key(w, "names");
  w.StartArray();
  for (const auto& n : s.counters.names) string(w, n);
  w.EndArray();
  key(w, "points");
  w.StartArray();
  for (const auto& [ts, values] : s.counters.points) {
    w.StartArray();
    number(w, ts);
    for (double v : values) number(w, v);
    w.EndArray();
  }
  w.EndArray();
  key(w, "events");
  w.Uint64(s.counters.events);
  key(w, "reduced");
  w.Bool(s.counters.reduced);
  w.EndObject();

  key(w, "stats");
  w.StartObject();
  key(w, "source");
  string(w, s.has_stats ? "trace" : "computed");
  key(w, "rows");
  w.StartArray();
  for (const StatRow& r : s.stats) {
    w.StartArray();
    string(w, r.name);
    json_text(w, r.value);
    w.EndArray();
  }
  w.EndArray();
  w.EndObject();
  key(w, "truncated");
  w.Bool(s.truncated);
  w.EndObject();
}

/// 128 random bits in hex: the nonce that lets the page's own scripts and style run under its
/// Content-Security-Policy. Markup injected through the data could not know it.
std::string nonce() {
  std::random_device random;
  std::string out;
  static constexpr char hex[] = "0123456789abcdef";
  for (int i = 0; i < 4; ++i) {
    std::uint32_t r = random();
    for (int k = 0; k < 8; ++k, r >>= 4) out += hex[r & 15];
  }
  return out;
}

std::string count(std::size_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

/// printable() of a text clean_text() cut, maybe quoted as a JSON string after that: its mark of
/// the cut, "…" (and the closing quote after it), stays as it is (printable() showed it as
/// \xe2\x80\xa6).
std::string shown(std::string_view text, std::size_t max) {
  for (std::string_view end : {std::string_view("\xE2\x80\xA6"), std::string_view("\xE2\x80\xA6\"")}) {
    if (text.size() >= end.size() && text.substr(text.size() - end.size()) == end)
      return printable(text.substr(0, text.size() - end.size()), max) + std::string(end);
  }
  return printable(text, max);
}

}  // namespace

std::vector<Note> report_notes(const ReadResult& read, const Page& page) {
  const Summary& summary = page.summary;
  const ReportLimits& limits = page.limits;
  std::vector<Note> notes;
  if (summary.truncated) {
    // A bad note is also printed to the terminal, and max_bytes is the trace's text (JSON, which
    // escapes only what is below 0x20): printable() turns DEL and every byte above 0x7F (C1
    // controls such as U+009B, CSI) into \xNN, as the reader's own messages do.
    notes.push_back({(summary.truncated_error.empty()
                          ? "The trace was truncated: it reached its size cap" +
                                (summary.truncated_max_bytes.empty()
                                     ? std::string()
                                     : " (max_bytes " + shown(summary.truncated_max_bytes, 60) + ")")
                          : "The trace was truncated: a write of it failed (" +
                                shown(summary.truncated_error, 220) + ")") +
                         ", and nothing after that point was recorded.",
                     true});
  }
  if (!read.closed) {
    notes.push_back({"The trace has no closing ']': the host did not shut the executor down cleanly "
                     "(it crashed or was killed), or it is still running.",
                     false});
  }
  if (read.dropped_last) {
    notes.push_back({"The last event (line " + std::to_string(read.dropped_line) + ", " +
                         count(read.dropped_bytes) + " bytes) was dropped: " +
                         (read.dropped_why == "incomplete" ? std::string("it is incomplete, as a killed host leaves it.")
                                                           : "it is not valid JSON (" + read.dropped_why + ")."),
                     true});
  }
  if (read.text_after_close_line != 0) {
    notes.push_back({"Text after the closing ']' (from line " + std::to_string(read.text_after_close_line) +
                         ") was ignored.",
                     false});
  }
  if (summary.skipped != 0) {
    notes.push_back({count(summary.skipped) + " events without the fields their kind needs were skipped (the "
                         "first on line " + std::to_string(summary.first_skipped_line) + ").",
                     true});
  }
  if (!summary.has_stats) {
    notes.push_back({"The trace has no stats event: the stats below are computed from its events.", false});
  }
  std::vector<std::string> left_out;
  if (summary.slices_total > limits.max_slices)
    left_out.push_back("the first " + count(limits.max_slices) + " of " + count(summary.slices_total) +
                       " calls (by start time)");
  if (summary.tracks_total > limits.max_tracks)
    left_out.push_back("the first " + count(limits.max_tracks) + " of " + count(summary.tracks_total) +
                       " workers");
  if (!left_out.empty()) {
    notes.push_back({"The task stream draws " + left_out[0] + (left_out.size() > 1 ? " and " + left_out[1] : "") +
                         "; the tables count everything.",
                     false});
  }
  if (page.other_tasks) {
    const TaskFigures& other = *page.other_tasks;
    notes.push_back({"Task names past the first " + count(page.tasks.size()) + " by name, " +
                         count(page.other_task_names) + " of them" +
                         ", are folded into one row of the tasks table, \"other task names\": " +
                         count(other.calls) + (other.calls == 1 ? " call" : " calls") +
                         (other.never_ran ? " and " + count(other.never_ran) + " that never ran" : std::string()) +
                         " (a failure listed still names its task).",
                     false});
  }
  if (page.texts_left_out_slices + page.texts_left_out_marks != 0) {
    std::string what = page.texts_left_out_slices ? count(page.texts_left_out_slices) + " calls" : std::string();
    if (page.texts_left_out_marks)
      what += (what.empty() ? "" : " and ") + count(page.texts_left_out_marks) + " worker marks";
    std::string let_go;
    if (page.texts_let_go != 0)
      let_go = " " + count(page.texts_let_go) +
               (page.texts_let_go == 1 ? " text that would fit was" : " texts that would fit were") +
               " let go as the trace was read, before calls or marks that came earlier in time were read (the "
               "trace is not in time order): the page holds less than that.";
    notes.push_back({"The texts (errors, messages, first inputs, reasons) of " + what +
                         " drawn are left out: the page holds " + detail::format_size(limits.max_text_bytes) +
                         " of them, the first by time (a failure listed keeps its texts)." + let_go,
                     false});
  }
  if (summary.slices_partial || summary.marks_partial) {
    // The summary keeps only what the page can draw: a lower worker number that came after the
    // first calls or marks were chosen took the place of a worker whose ones had been kept.
    notes.push_back({std::string("The task stream may miss some of the first ") +
                         (summary.slices_partial ? summary.marks_partial ? "calls and marks" : "calls" : "marks") +
                         " of the workers it draws: the trace named workers out of order after they were chosen.",
                     false});
  }
  if (summary.busy_out_of_order != 0) {
    notes.push_back({count(summary.busy_out_of_order) + " calls came more than " + std::to_string(busy_window) +
                         " places out of start order on their worker: busy times may count their overlap twice.",
                     false});
  }
  return notes;
}

bool write_report_html(std::FILE* file, std::string_view trace_file, std::string_view generator, const Page& page,
                       const std::vector<Note>& notes) {
  Output out(file);
  const std::string page_nonce = nonce();
  std::string_view html = assets::report_html;
  // The template's placeholders, each a name between double braces, in order of appearance.
  for (;;) {
    auto open = html.find("{{");
    if (open == std::string_view::npos) break;
    auto close = html.find("}}", open);
    if (close == std::string_view::npos) break;
    out.raw(html.substr(0, open));
    std::string_view name = html.substr(open + 2, close - open - 2);
    if (name == "nonce") {
      out.raw(page_nonce);
    } else if (name == "style") {
      out.raw(assets::report_css);
    } else if (name == "script") {
      out.raw(assets::report_js);
    } else if (name == "data") {
      HtmlSafeJsonStream stream(out);
      Writer writer(stream);
      writer.SetMaxDecimalPlaces(3);  // times in µs: nanoseconds are enough
      write_data(writer, trace_file, generator, page, notes);
    } else {
      throw std::logic_error("cli/report/report.html: unknown placeholder {{" + std::string(name) + "}}");
    }
    html.remove_prefix(close + 2);
  }
  out.raw(html);
  return out.flush();
}

}  // namespace ferry::cli::trace
