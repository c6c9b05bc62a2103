// SPDX-License-Identifier: BSD-3-Clause
// From trace events to what the report shows. Events are read once, in file order, and what they
// add up to (totals, per-task figures, each kept track's busy time, the computed stats) is counted
// as they come; finish() sorts what was kept, matches queue waits to slices, walks each track's
// last busy-time window and reduces the counters.
//
// Lenient where the format (docs/trace-format.md) allows two readings, strict about nothing: an
// event without the fields its kind needs is counted as skipped, never an error, since the file
// may come from a host that died or from someone else's tool.
#include "trace_summary.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <random>

#include "platform/format.hpp"

namespace ferry::cli::trace {

// ---- helpers -----------------------------------------------------------------------------------

std::int32_t StringTable::add(std::string&& s) {
  strings_.push_back(std::move(s));
  return static_cast<std::int32_t>(strings_.size() - 1);
}

std::int32_t StringTable::add_let_go(std::uint32_t page_bytes) {
  strings_.emplace_back();
  const auto i = static_cast<std::int32_t>(strings_.size() - 1);
  let_go_.emplace_back(i, page_bytes);
  return i;
}

bool StringTable::let_go(std::int32_t i) const {
  auto it = std::lower_bound(let_go_.begin(), let_go_.end(), std::make_pair(i, std::uint32_t{0}));
  return it != let_go_.end() && it->first == i;
}

std::uint32_t StringTable::let_go_bytes(std::int32_t i) const {
  auto it = std::lower_bound(let_go_.begin(), let_go_.end(), std::make_pair(i, std::uint32_t{0}));
  return it != let_go_.end() && it->first == i ? it->second : 0;
}

std::size_t page_text_bytes(std::string_view text) {
  std::size_t n = 2;
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      n += c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7F ? 6 : c == '"' || c == '\\' ? 2 : 1;
      ++i;
      continue;
    }
    const std::size_t len = ferry::detail::utf8_length(text, i);
    if (len == 0) {  // not in a Summary's text (clean_text), but counted as it would be written
      ++n;
      ++i;
      continue;
    }
    n += ferry::detail::escaped_on_terminal(text, i, len) ? 7 : len;
    i += len;
  }
  return n;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  // Integer arithmetic on the percent: 0.9 * 10 must be rank 9, not 9.000000000000002.
  auto percent = static_cast<std::size_t>(std::llround(p * 100));
  std::size_t rank = (sorted.size() * percent + 99) / 100;
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

std::string clean_text(std::string_view text, std::size_t max) {
  std::string out;
  out.reserve(std::min(text.size(), max) + 3);
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t len = ferry::detail::utf8_length(text, i);
    std::string_view piece = len ? text.substr(i, len) : std::string_view("\xEF\xBF\xBD");
    if (out.size() + piece.size() > max) {
      out += "\xE2\x80\xA6";  // …
      return out;
    }
    out += piece;
    i += len ? len : 1;
  }
  return out;
}

namespace {

constexpr std::size_t max_name = max_name_bytes;
constexpr std::size_t max_message = max_message_bytes;

const rj::Value* member(const rj::Value& object, const char* name) {
  if (!object.IsObject()) return nullptr;
  auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

std::optional<std::string_view> string_of(const rj::Value* v) {
  if (!v || !v->IsString()) return std::nullopt;
  return std::string_view(v->GetString(), v->GetStringLength());
}

std::optional<std::string_view> string_at(const rj::Value& object, const char* name) {
  return string_of(member(object, name));
}

/// A finite number (NaN and Infinity parse, with cereal's flags, and would poison every scale).
std::optional<double> number_at(const rj::Value& object, const char* name) {
  const rj::Value* v = member(object, name);
  if (!v || !v->IsNumber()) return std::nullopt;
  double d = v->GetDouble();
  if (!std::isfinite(d)) return std::nullopt;
  return d;
}

/// An integer-valued number within a double's exact range.
std::optional<std::int64_t> integer_at(const rj::Value& object, const char* name) {
  const rj::Value* v = member(object, name);
  if (!v || !v->IsNumber()) return std::nullopt;
  if (v->IsInt64()) return v->GetInt64();
  double d = v->GetDouble();
  if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9007199254740992.0) return std::nullopt;
  return static_cast<std::int64_t>(d);
}

/// A value as JSON text that is always valid and shows what it was: numbers (finite) and
/// literals as they are, strings cleaned, anything else as the text of its compact JSON.
std::string value_text(const rj::Value& v, std::size_t max) {
  if (v.IsNumber()) {
    double d = v.GetDouble();
    if (!std::isfinite(d)) return json::quote(std::isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
    return json::write(v);
  }
  if (v.IsBool() || v.IsNull()) return json::write(v);
  if (v.IsString()) return json::quote(clean_text(std::string_view(v.GetString(), v.GetStringLength()), max));
  return json::quote(clean_text(json::write(v), max));
}

/// The text of a value for display: a string as it is, anything else as JSON.
std::string display_text(const rj::Value& v, std::size_t max) {
  if (v.IsString()) return clean_text(std::string_view(v.GetString(), v.GetStringLength()), max);
  if (v.IsNumber() && !std::isfinite(v.GetDouble())) return std::isnan(v.GetDouble()) ? "NaN" : "Infinity";
  return clean_text(json::write(v), max);
}

/// An object's members as rows: "name" for a plain value, "name.member" one level down.
void flatten(const rj::Value& object, std::vector<StatRow>& rows, std::size_t max_stat_rows) {
  if (!object.IsObject()) return;
  for (const auto& m : object.GetObject()) {
    if (rows.size() >= max_stat_rows) return;
    std::string name = clean_text(std::string_view(m.name.GetString(), m.name.GetStringLength()), max_name);
    if (m.value.IsObject() && m.value.MemberCount() > 0) {
      for (const auto& sub : m.value.GetObject()) {
        if (rows.size() >= max_stat_rows) return;
        rows.push_back({name + "." + clean_text(std::string_view(sub.name.GetString(),
                                                                 sub.name.GetStringLength()),
                                                max_name),
                        value_text(sub.value, max_name)});
      }
    } else {
      rows.push_back({std::move(name), value_text(m.value, max_name)});
    }
  }
}

/// An async event's id as a key: numbers in decimal, "0x..." strings converted from hex, other
/// strings as they are, up to max_id_bytes (a longer one: none, and the event is skipped). The
/// format gives `id` = `call` (a number); Chrome's format also allows ids as strings, so both are
/// read.
std::optional<std::string> id_key(const rj::Value& event) {
  const rj::Value* id = member(event, "id");
  if (id && id->IsNumber()) {
    if (auto n = integer_at(event, "id")) return std::to_string(*n);
    return std::nullopt;
  }
  if (auto s = string_of(id)) {
    if (s->size() > 2 && s->size() <= 18 && (s->starts_with("0x") || s->starts_with("0X"))) {
      std::uint64_t n = 0;
      bool hex = true;
      for (char c : s->substr(2)) {
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) hex = false;
        n = n * 16 + static_cast<std::uint64_t>(std::max(d, 0));
      }
      if (hex) return std::to_string(n);
    }
    if (s->size() > max_id_bytes) return std::nullopt;
    return std::string(*s);
  }
  // No id: the begin event's args.call.
  if (const rj::Value* args = member(event, "args")) {
    if (auto call = integer_at(*args, "call")) return std::to_string(*call);
  }
  return std::nullopt;
}

/// The call an id key names: the key as std::to_string writes an integer >= 0 (what a slice's
/// args.call is looked up as), else none.
std::optional<std::int64_t> call_of_id(std::string_view key) {
  if (key.empty() || key.size() > 19 || (key.size() > 1 && key[0] == '0')) return std::nullopt;
  std::int64_t n = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return std::nullopt;
    const int d = c - '0';
    if (n > (std::numeric_limits<std::int64_t>::max() - d) / 10) return std::nullopt;
    n = n * 10 + d;
  }
  return n;
}

struct CounterSample {
  double ts;
  std::uint32_t series;
  double value;
};

}  // namespace

// ---- reading -----------------------------------------------------------------------------------

namespace {

/// Strings of the records kept while reading, counted by reference: a record the caps leave out
/// gives its strings back, so that only the strings of what may be drawn stay. Each is held once:
/// the index's keys view the texts, which a deque never moves. Ordered, not hashed (see
/// StringTable). A text can be let go while records still refer to it (a text the page would not
/// show): its place stays, with its page bytes, until the last reference goes; it leaves the
/// index, so the same text read again is a new one.
class RefStrings {
 public:
  std::int32_t intern(std::string s) {
    auto it = index_.lower_bound(s);
    if (it != index_.end() && it->first == s) {
      ++refs_[static_cast<std::size_t>(it->second)];
      return it->second;
    }
    const auto bytes = static_cast<std::uint32_t>(std::min<std::size_t>(page_text_bytes(s), UINT32_MAX));
    held_ += s.size();
    std::int32_t i;
    if (!free_.empty()) {
      i = free_.back();
      free_.pop_back();
      const auto k = static_cast<std::size_t>(i);
      text_[k] = std::move(s);
      refs_[k] = 1;
      page_bytes_[k] = bytes;
      let_go_[k] = false;
    } else {
      i = static_cast<std::int32_t>(text_.size());
      text_.push_back(std::move(s));
      refs_.push_back(1);
      page_bytes_.push_back(bytes);
      let_go_.push_back(false);
    }
    index_.emplace_hint(it, text_[static_cast<std::size_t>(i)], i);
    return i;
  }
  void retain(std::int32_t i) {
    if (i >= 0) ++refs_[static_cast<std::size_t>(i)];
  }
  /// Not after drop_index().
  void release(std::int32_t i) {
    if (i < 0) return;
    const auto k = static_cast<std::size_t>(i);
    if (--refs_[k] != 0) return;
    if (!let_go_[k]) forget(k);
    let_go_[k] = false;
    free_.push_back(i);
  }
  /// Drops the text of `i` (>= 0), which stays referred to. Not after drop_index().
  void let_go(std::int32_t i) {
    const auto k = static_cast<std::size_t>(i);
    if (let_go_[k]) return;
    forget(k);
    let_go_[k] = true;
  }
  bool is_let_go(std::int32_t i) const { return let_go_[static_cast<std::size_t>(i)]; }
  /// The bytes text `i` takes in the page (page_text_bytes).
  std::uint32_t page_bytes(std::int32_t i) const { return page_bytes_[static_cast<std::size_t>(i)]; }
  /// Bytes of the texts held (not let go, not released).
  std::size_t held() const { return held_; }
  /// The text of `i`, moved out: the table is left for finish() to drop.
  std::string take(std::int32_t i) { return std::move(text_[static_cast<std::size_t>(i)]); }
  std::size_t size() const { return text_.size(); }
  void drop_index() { decltype(index_)().swap(index_); }

 private:
  void forget(std::size_t k) {
    index_.erase(index_.find(std::string_view(text_[k])));
    held_ -= text_[k].size();
    std::string().swap(text_[k]);
  }
  std::deque<std::string> text_;
  std::vector<std::uint32_t> refs_;
  std::vector<std::uint32_t> page_bytes_;
  std::vector<bool> let_go_;
  std::vector<std::int32_t> free_;
  std::map<std::string_view, std::int32_t> index_;
  std::size_t held_ = 0;
};

/// Where a kept record stands in the page's order: its time, then the order it was read in.
struct Order {
  double ts;
  std::uint64_t seq;
  bool operator<(const Order& o) const { return ts < o.ts || (ts == o.ts && seq < o.seq); }
};

struct KeptSlice {
  Slice s;             ///< s.track and s.task unset until finish
  std::int64_t tid;
  std::uint64_t task;  ///< TaskId
  std::uint64_t seq;
  Order order() const { return {s.ts, seq}; }
};

struct KeptMark {
  Mark m;
  std::int64_t tid;
  std::uint64_t seq;
  Order order() const { return {m.ts, seq}; }
};

struct KeptFailure {
  Failure f;            ///< f.track and f.task unset until finish; f.task_name always set
  std::uint64_t task;   ///< TaskId
  bool ended;           ///< a `call ended` (never ran); else a failed slice
  std::int64_t tid;     ///< of a failed slice (any integer, negative too); unused for `call ended`
  std::uint64_t seq;
  /// The page's order: by time, `call ended` before failed slices, then as read.
  bool operator<(const KeptFailure& o) const {
    if (f.ts != o.f.ts) return f.ts < o.f.ts;
    if (ended != o.ended) return ended;
    return seq < o.seq;
  }
};

/// A slice waiting its turn in a track's busy-time window.
struct BusySlice {
  double ts, dur;
  std::uint64_t seq;
  Order order() const { return {ts, seq}; }
};

/// A kept track and what its busy time needs.
struct TrackState {
  Track t;
  std::vector<BusySlice> window;  ///< by Order, at most busy_window
  double until = -std::numeric_limits<double>::infinity();
  bool applied = false;
  Order last{};
  double min_nonneg = -1, max_neg = 0;  ///< for Track::first_slice
  bool any_neg = false;
};

/// The caps' reckoning for slices or marks: the smallest Order a cut left out. Every kept record
/// before it is still there, so the first N are exact when at least N of the final tracks' records
/// come before it.
struct CutFloor {
  bool cut = false;
  Order floor{};
  void left_out(const Order& o) {
    if (!cut || o < floor) floor = o;
    cut = true;
  }
};

/// A per-name count that keeps only the `cap` smallest names: a table of rows in name order that
/// stops at `cap` shows no other. A name left out can never come back: `cap` smaller ones stay.
class SmallestNames {
 public:
  explicit SmallestNames(std::size_t cap = 500) : cap_(std::max<std::size_t>(cap, 1)) {}
  void add(std::string_view name) {
    auto it = counts_.lower_bound(name);
    if (it != counts_.end() && it->first == name) {
      ++it->second;
      return;
    }
    if (counts_.size() >= cap_) {
      auto last = std::prev(counts_.end());
      if (!(name < last->first)) return;
      if (it == last) it = counts_.end();
      counts_.erase(last);
    }
    counts_.emplace_hint(it, std::string(name), 1);
  }
  const std::map<std::string, std::size_t, std::less<>>& counts() const { return counts_; }

 private:
  std::size_t cap_;
  std::map<std::string, std::size_t, std::less<>> counts_;
};

/// Distinct names counted without keeping them: each as a 61-bit polynomial hash (its bytes + 1
/// the coefficients, mod 2^61 - 1) at a point drawn at random for each counter, so that two names
/// of at most L bytes take one value with a chance of at most L / 2^61, whatever names a trace
/// holds (no name can be chosen to collide without the point, unlike std::hash's, see
/// StringTable): 8 bytes a name, sorted, with the new ones merged in when they are as many.
class DistinctNames {
 public:
  DistinctNames() {
    std::random_device random;
    const std::uint64_t r = (std::uint64_t{random()} << 32) ^ random();
    point_ = 2 + r % (prime - 3);
  }
  void add(std::string_view name) {
    std::uint64_t h = 0;
    for (char c : name) h = add_mod(mul_mod(h, point_), static_cast<unsigned char>(c) + 1u);
    if (std::binary_search(seen_.begin(), seen_.end(), h)) return;
    fresh_.push_back(h);
    if (fresh_.size() >= std::max<std::size_t>(seen_.size(), 4096)) merge();
  }
  std::size_t count() {
    merge();
    return seen_.size();
  }

 private:
  static constexpr std::uint64_t prime = (std::uint64_t{1} << 61) - 1;
  static std::uint64_t add_mod(std::uint64_t a, std::uint64_t b) {
    const std::uint64_t x = a + b;
    return x >= prime ? x - prime : x;
  }
  static std::uint64_t mul_mod(std::uint64_t a, std::uint64_t b) {
    __extension__ using u128 = unsigned __int128;
    const u128 x = static_cast<u128>(a) * b;
    return add_mod(static_cast<std::uint64_t>(x) & prime, static_cast<std::uint64_t>(x >> 61));
  }
  void merge() {
    std::sort(fresh_.begin(), fresh_.end());
    std::vector<std::uint64_t> merged;
    merged.reserve(seen_.size() + fresh_.size());
    std::set_union(seen_.begin(), seen_.end(), fresh_.begin(), fresh_.end(), std::back_inserter(merged));
    merged.erase(std::unique(merged.begin(), merged.end()), merged.end());
    seen_ = std::move(merged);
    std::vector<std::uint64_t>().swap(fresh_);
  }
  std::uint64_t point_;
  std::vector<std::uint64_t> seen_, fresh_;
};

/// A task name's number while reading: each name counted on its own gets the next one when it
/// enters the table (1, 2, ...); 0 is the names counted together (Summary::other_tasks). A name
/// that leaves the table leaves its number with it: records that hold it are of other_tasks.
using TaskId = std::uint64_t;

/// The figures of the `max` smallest task names, by name, and of the others together: a name
/// past them when the table is full, or the largest one when a smaller name comes, is added to
/// the others and can never come back (max smaller names stay).
class TaskTable {
 public:
  explicit TaskTable(std::size_t max) : max_(std::max<std::size_t>(max, 1)) {}
  struct Ref {
    TaskId id;
    TaskFigures* figures;
  };
  /// The row of `name` (cleaned already), made when the name is new and among the smallest.
  Ref find(std::string&& name) {
    auto it = rows_.lower_bound(name);
    if (it != rows_.end() && it->first == name) return {it->second.id, &it->second.figures};
    if (rows_.size() >= max_) {
      auto largest = std::prev(rows_.end());
      if (!(name < largest->first)) {
        folded_names_.add(name);
        return {0, &others_};
      }
      folded_names_.add(largest->first);
      fold(largest->second.figures);
      if (it == largest) it = rows_.end();
      rows_.erase(largest);
    }
    it = rows_.emplace_hint(it, std::move(name), Row{next_id_++, {}});
    it->second.figures.name = it->first;
    return {it->second.id, &it->second.figures};
  }
  /// Moves the rows out, by name, and gives each kept TaskId its index among them.
  std::vector<TaskFigures> take(std::map<TaskId, std::uint32_t>& index) {
    std::vector<TaskFigures> out;
    out.reserve(rows_.size());
    for (auto& [name, row] : rows_) {
      index.emplace(row.id, static_cast<std::uint32_t>(out.size()));
      out.push_back(std::move(row.figures));
    }
    decltype(rows_)().swap(rows_);
    return out;
  }
  TaskFigures& others() { return others_; }
  /// How many distinct names others() counts.
  std::size_t folded_names() { return folded_names_.count(); }

 private:
  struct Row {
    TaskId id;
    TaskFigures figures;
  };
  void fold(TaskFigures& t) {
    others_.calls += t.calls;
    others_.items += t.items;
    others_.failed += t.failed;
    others_.never_ran += t.never_ran;
    others_.durations.insert(others_.durations.end(), t.durations.begin(), t.durations.end());
  }
  std::size_t max_;
  TaskId next_id_ = 1;
  std::map<std::string, Row, std::less<>> rows_;
  TaskFigures others_;
  DistinctNames folded_names_;
};

std::string default_label(std::int64_t tid) {
  return tid == 0 ? "pool (track 0)" : "track " + std::to_string(tid);
}

}  // namespace

struct SummaryBuilder::State {
  SummaryLimits limits;
  Summary out;
  std::uint64_t seq = 0;  ///< events read
  // Every map keyed by text of the trace is ordered, never hashed: libstdc++'s std::hash of a
  // string has collisions that hold for any seed, and n distinct colliding keys (task names, ids)
  // would take O(n²) to insert; here each lookup is O(log n) comparisons.
  std::map<std::int64_t, TrackState> tracks;  ///< the max_tracks lowest tids
  /// Tids seen and not kept (left out, or replaced by a lower one): sorted, and new ones since,
  /// merged in when there are as many; 8 bytes a tid, for Summary::tracks_total.
  std::vector<std::int64_t> other_tids, other_new;
  /// Labels of tracks not kept, for their failures: the last max_tracks named.
  std::map<std::int64_t, std::pair<std::uint64_t, std::string>> other_labels;
  std::map<std::uint64_t, std::int64_t> other_label_order;  ///< by when named: the oldest goes
  std::uint64_t label_clock = 0;
  TaskTable tasks;
  std::map<std::string, double, std::less<>> queue_begin;     ///< id → ts of its `b`
  /// (call, queue wait) of each `e` matched with its `b`, as read: 16 bytes a call, sorted by call
  /// in finish (the last `e` of an id wins). Only ids that name a call (a slice's args.call, an
  /// integer >= 0) are kept: the others can match no slice.
  std::vector<std::pair<std::int64_t, double>> wait_of_call;
  std::size_t queue_begins = 0;
  std::vector<CounterSample> counter_samples;
  std::map<std::string, std::uint32_t, std::less<>> series_of_name;
  bool any_ts = false;

  RefStrings strings;
  std::vector<KeptSlice> slices;
  std::vector<KeptMark> marks;
  std::vector<KeptFailure> failures;
  CutFloor slices_cut, marks_cut;
  /// How many of the first slices and marks are in Order (check_texts sorted them; a cut undoes it).
  std::size_t slices_sorted = 0, marks_sorted = 0;
  /// Every slice with a call, for its task's queue waits (matched in finish, as the last `e` of
  /// its id says).
  std::vector<std::pair<std::int64_t, TaskId>> slice_calls;
  // The computed stats, counted as read.
  std::size_t completed = 0, failed = 0, never_ran = 0, started = 0, crashed = 0;
  SmallestNames failed_by_type, exited_by_reason;

  /// When the texts held reach this many bytes, those the page would not show are let go.
  std::size_t next_text_check;

  explicit State(const SummaryLimits& l)
      : limits(l), tasks(l.max_tasks), failed_by_type(l.max_stat_rows), exited_by_reason(l.max_stat_rows),
        next_text_check(text_step()) {}

  /// A quarter of the page's texts between two looks: 100,000 calls of 1.9 KB messages peaked at
  /// 94 MiB with a look each 16 MiB, 84 MiB each 4 MiB, in the same time.
  std::size_t text_step() const {
    return std::max({limits.max_text_bytes / 4, limits.text_check_bytes, std::size_t{1}});
  }

  void skip(std::size_t line) {
    if (out.skipped++ == 0) out.first_skipped_line = line;
  }

  // ---- tracks ----

  void other_tid(std::int64_t tid) {
    if (std::binary_search(other_tids.begin(), other_tids.end(), tid)) return;
    other_new.push_back(tid);
    if (other_new.size() >= std::max<std::size_t>(other_tids.size(), 4096)) merge_other_tids();
  }
  void merge_other_tids() {
    std::sort(other_new.begin(), other_new.end());
    std::vector<std::int64_t> merged;
    merged.reserve(other_tids.size() + other_new.size());
    std::set_union(other_tids.begin(), other_tids.end(), other_new.begin(), other_new.end(),
                   std::back_inserter(merged));
    merged.erase(std::unique(merged.begin(), merged.end()), merged.end());
    other_tids = std::move(merged);
    std::vector<std::int64_t>().swap(other_new);
  }

  void other_label(std::int64_t tid, std::string label) {
    if (auto it = other_labels.find(tid); it != other_labels.end()) {
      other_label_order.erase(it->second.first);
      other_labels.erase(it);
    }
    const std::uint64_t at = ++label_clock;
    other_labels.emplace(tid, std::make_pair(at, std::move(label)));
    other_label_order.emplace(at, tid);
    if (other_labels.size() > std::max<std::size_t>(limits.max_tracks, 1)) {
      auto oldest = other_label_order.begin();
      other_labels.erase(oldest->second);
      other_label_order.erase(oldest);
    }
  }
  std::string label_of_other(std::int64_t tid) const {
    auto it = other_labels.find(tid);
    return it != other_labels.end() ? it->second.second : default_label(tid);
  }

  /// The kept track of `tid`, or null when it is not among the max_tracks lowest (then counted).
  TrackState* track(std::int64_t tid) {
    if (auto it = tracks.find(tid); it != tracks.end()) return &it->second;
    if (tracks.size() >= std::max<std::size_t>(limits.max_tracks, 1)) {
      auto highest = std::prev(tracks.end());
      if (tid > highest->first) {
        other_tid(tid);
        return nullptr;
      }
      // A lower tid: the highest is no longer drawn (and never will be: max_tracks lower ones
      // stay). Its slices and marks leave at the next cut; its label stays for its failures.
      other_tid(highest->first);
      other_label(highest->first, std::move(highest->second.t.label));
      tracks.erase(highest);
    }
    TrackState& st = tracks[tid];
    st.t.tid = tid;
    st.t.label = default_label(tid);
    return &st;
  }

  bool kept(std::int64_t tid) const { return tracks.count(tid) != 0; }

  static void apply_busy(TrackState& st, const BusySlice& b) {
    // Busy time is the union of the slices: in start order, only what reaches past the previous
    // end counts (a worker runs one call at a time, but a trace is not trusted to say so).
    double end = b.ts + b.dur;
    if (end > st.until) {
      st.t.busy += end - std::max(b.ts, st.until);
      st.until = end;
    }
    st.applied = true;
    st.last = b.order();
  }

  void busy(TrackState& st, const BusySlice& b) {
    if (st.applied && b.order() < st.last) {
      ++out.busy_out_of_order;  // later than the window: counted as it comes
      double end = b.ts + b.dur;
      if (end > st.until) {
        st.t.busy += end - std::max(b.ts, st.until);
        st.until = end;
      }
      return;
    }
    auto at = std::upper_bound(st.window.begin(), st.window.end(), b,
                               [](const BusySlice& x, const BusySlice& y) { return x.order() < y.order(); });
    st.window.insert(at, b);
    if (st.window.size() > busy_window) {
      apply_busy(st, st.window.front());
      st.window.erase(st.window.begin());
    }
  }

  // ---- the caps ----

  void release(const Slice& s) {
    strings.release(s.error);
    strings.release(s.message);
    strings.release(s.first_input);
  }
  void release(const Mark& m) {
    strings.release(m.reason);
    strings.release(m.error);
  }
  void release(const Failure& f) {
    strings.release(f.error);
    strings.release(f.message);
    strings.release(f.track_label);
    strings.release(f.task_name);
  }

  /// Drops the records of tracks no longer kept, then all but the first `cap` (by Order).
  template <class Kept>
  void cut(std::vector<Kept>& v, std::size_t cap, CutFloor& floor) {
    auto gone = std::partition(v.begin(), v.end(), [&](const Kept& k) { return kept(k.tid); });
    for (auto it = gone; it != v.end(); ++it) release(record(*it));
    v.erase(gone, v.end());
    if (v.size() > cap) {
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(cap), v.end(),
                       [](const Kept& a, const Kept& b) { return a.order() < b.order(); });
      for (auto it = v.begin() + static_cast<std::ptrdiff_t>(cap); it != v.end(); ++it) {
        floor.left_out(it->order());
        release(record(*it));
      }
      v.erase(v.begin() + static_cast<std::ptrdiff_t>(cap), v.end());
    }
  }
  static const Slice& record(const KeptSlice& k) { return k.s; }
  static const Mark& record(const KeptMark& k) { return k.m; }

  void cut_failures() {
    const std::size_t cap = std::max<std::size_t>(limits.max_failures, 1);
    std::nth_element(failures.begin(), failures.begin() + static_cast<std::ptrdiff_t>(cap), failures.end());
    for (auto it = failures.begin() + static_cast<std::ptrdiff_t>(cap); it != failures.end(); ++it) release(it->f);
    failures.erase(failures.begin() + static_cast<std::ptrdiff_t>(cap), failures.end());
  }
  void add_failure(KeptFailure f) {
    ++out.failures_total;
    failures.push_back(std::move(f));
    if (failures.size() >= 4 * std::max<std::size_t>(limits.max_failures, 1)) cut_failures();
  }

  // ---- the texts ----

  /// Sorts `v` by Order: the records read since the last look (the first `sorted` are in order
  /// unless a cut came since), merged in. A look each 4 MiB of texts sorted 400,000 calls each
  /// time: 1.8 s of 12 for 833 MB of 2 KB messages.
  template <class Kept>
  static void sort_by_order(std::vector<Kept>& v, std::size_t& sorted) {
    auto by_order = [](const Kept& a, const Kept& b) { return a.order() < b.order(); };
    const auto middle = v.begin() + static_cast<std::ptrdiff_t>(std::min(sorted, v.size()));
    std::sort(middle, v.end(), by_order);
    std::inplace_merge(v.begin(), middle, v.end(), by_order);
    sorted = v.size();
  }

  /// Lets go of the texts of kept calls and marks that the page would not show if the trace ended
  /// here, as Page chooses them: the texts of the failures it lists, then of the marks and calls
  /// it draws, in its order, each once, while they fit in max_text_bytes. Those of a call or mark
  /// it would not draw go too. The texts of kept failures stay (a failure listed keeps its texts,
  /// and which are listed is known only at the end). A trace written in time order gets the page
  /// it got when every text was kept: a call read later comes later in the page's order, where
  /// what fits depends only on what came before. A call read later that comes earlier can change
  /// that; the page then shows "(left out ...)" for a text let go that it could have shown, and
  /// counts them (Page::texts_let_go).
  void check_texts() {
    enum Fate : std::uint8_t { unused, shown, left_out };
    std::vector<Fate> fate(strings.size(), unused);
    std::vector<bool> kept_by_failure(strings.size(), false);
    std::sort(failures.begin(), failures.end());
    for (std::size_t k = 0; k < failures.size(); ++k) {
      const Failure& f = failures[k].f;
      for (std::int32_t i : {f.error, f.message, f.task_name, f.track_label}) {
        if (i < 0) continue;
        kept_by_failure[static_cast<std::size_t>(i)] = true;
        if (k < limits.max_failures && i != f.track_label && !strings.is_let_go(i)) fate[static_cast<std::size_t>(i)] = shown;
      }
    }
    std::size_t spent = 0;
    auto fits = [&](std::int32_t i) {
      if (i < 0) return;
      Fate& at = fate[static_cast<std::size_t>(i)];
      if (at != unused) return;
      if (strings.is_let_go(i)) {
        at = left_out;
        return;
      }
      const std::size_t bytes = strings.page_bytes(i);
      at = bytes <= limits.max_text_bytes - std::min(spent, limits.max_text_bytes) ? shown : left_out;
      if (at == shown) spent += bytes;
    };
    sort_by_order(marks, marks_sorted);
    sort_by_order(slices, slices_sorted);
    std::size_t drawn = 0;
    for (const KeptMark& k : marks) {
      if (drawn == limits.max_marks) break;
      if (!kept(k.tid)) continue;
      ++drawn;
      fits(k.m.reason);
      fits(k.m.error);
    }
    drawn = 0;
    for (const KeptSlice& k : slices) {
      if (drawn == limits.max_slices) break;
      if (!kept(k.tid)) continue;
      ++drawn;
      fits(k.s.error);
      fits(k.s.message);
      fits(k.s.first_input);
    }
    auto let_go = [&](std::int32_t i) {
      if (i >= 0 && fate[static_cast<std::size_t>(i)] != shown && !kept_by_failure[static_cast<std::size_t>(i)])
        strings.let_go(i);
    };
    for (const KeptMark& k : marks) {
      let_go(k.m.reason);
      let_go(k.m.error);
    }
    for (const KeptSlice& k : slices) {
      let_go(k.s.error);
      let_go(k.s.message);
      let_go(k.s.first_input);
    }
    next_text_check = strings.held() + text_step();
  }

  // ---- events ----

  TaskTable::Ref task(std::string_view name) { return tasks.find(clean_text(name, max_name)); }

  /// args[name] as text for display, or none when absent or null.
  static std::optional<std::string> text(const rj::Value* args, const char* name, std::size_t max) {
    const rj::Value* v = args ? member(*args, name) : nullptr;
    if (!v || v->IsNull()) return std::nullopt;
    return display_text(*v, max);
  }
  std::int32_t keep(std::optional<std::string> s) { return s ? strings.intern(std::move(*s)) : -1; }

  void metadata(const rj::Value& e, std::string_view name, const rj::Value* args, std::size_t line) {
    if (name == "thread_name") {
      auto tid = integer_at(e, "tid");
      auto label = args ? string_at(*args, "name") : std::nullopt;
      if (!tid || !label) return skip(line);
      if (TrackState* st = track(*tid)) {
        st->t.label = clean_text(*label, max_name);
      } else {
        other_label(*tid, clean_text(*label, max_name));
      }
    } else if (name == "process_name") {
      if (auto label = args ? string_at(*args, "name") : std::nullopt) out.process_name = clean_text(*label, max_name);
    } else if (name == "ferry" && args && args->IsObject()) {
      std::vector<StatRow> rows;
      flatten(*args, rows, limits.max_stat_rows);
      out.meta.clear();
      for (auto& r : rows) out.meta.emplace_back(std::move(r.name), std::move(r.value));
    }
  }

  void instant(const rj::Value& e, std::string_view name, std::optional<double> ts, const rj::Value* args,
               std::size_t line) {
    if (name == "stats") {
      out.has_stats = true;
      out.stats.clear();
      if (args) flatten(*args, out.stats, limits.max_stat_rows);
      return;
    }
    if (name == "trace truncated") {
      out.truncated = true;
      const rj::Value* max = args ? member(*args, "max_bytes") : nullptr;
      if (max) out.truncated_max_bytes = value_text(*max, 40);
      // A write that failed: strerror's words, shown as they are (cleaned, cut).
      if (auto error = args ? string_at(*args, "error") : std::nullopt) out.truncated_error = clean_text(*error, 200);
      return;
    }
    if (!ts) return skip(line);
    if (name == "call ended") {
      auto task_name = args ? string_at(*args, "task") : std::nullopt;
      const TaskTable::Ref t = task(task_name.value_or("(unnamed)"));
      KeptFailure k{.f = {}, .task = t.id, .ended = true, .tid = 0, .seq = seq};
      Failure& f = k.f;
      f.ts = *ts;
      f.call = args ? integer_at(*args, "call").value_or(-1) : -1;
      f.task_name = strings.intern(clean_text(task_name.value_or("(unnamed)"), max_name));
      auto error = text(args, "error", max_name);
      ++never_ran;
      if (error) {
        ++failed;
        failed_by_type.add(*error);
      }
      f.error = keep(std::move(error));
      f.message = keep(text(args, "message", max_message));
      ++t.figures->never_ran;
      add_failure(std::move(k));
      return;
    }
    Mark::Kind kind;
    if (name == "worker start") {
      kind = Mark::Kind::start;
    } else if (name == "worker exit") {
      kind = Mark::Kind::exit;
    } else if (name == "worker crash") {
      kind = Mark::Kind::crash;
    } else {
      return;  // an instant this reader does not know: ignored
    }
    auto tid = integer_at(e, "tid");
    if (!tid) return skip(line);
    auto reason = text(args, "reason", max_name);
    if (kind == Mark::Kind::start) ++started;
    if (kind == Mark::Kind::crash) ++crashed;
    if (kind == Mark::Kind::exit) exited_by_reason.add(reason ? *reason : "(none)");
    TrackState* st = track(*tid);
    if (!st) return;  // not drawn: counted in the stats above
    auto error = text(args, "error", max_name);
    Track& t = st->t;
    if (kind == Mark::Kind::start) {
      if (t.start < 0) t.start = *ts;
    } else if (t.end_kind == Track::End::alive || *ts < t.end) {
      // The first end wins: a track's worker ends once.
      t.end = *ts;
      t.end_kind = kind == Mark::Kind::exit ? Track::End::exit : Track::End::crash;
      t.end_reason = reason.value_or("");
      t.end_error = error.value_or("");
    }
    marks.push_back({.m = {.kind = kind, .ts = *ts, .track = 0, .reason = keep(std::move(reason)),
                           .error = keep(std::move(error))},
                     .tid = *tid, .seq = seq});
    if (marks.size() >= 2 * std::max<std::size_t>(limits.max_marks, 1)) {
      cut(marks, std::max<std::size_t>(limits.max_marks, 1), marks_cut);
      marks_sorted = 0;
    }
  }

  void slice(const rj::Value& e, std::optional<std::string_view> name, std::optional<double> ts,
             const rj::Value* args, std::size_t line) {
    auto dur = number_at(e, "dur");
    auto tid = integer_at(e, "tid");
    if (!name || !ts || !dur || !tid || *dur < 0) return skip(line);
    ++out.slices_total;
    Slice s;
    s.ts = *ts;
    s.dur = *dur;
    const TaskTable::Ref row = task(*name);
    std::optional<std::string> error;
    if (args) {
      s.call = integer_at(*args, "call").value_or(-1);
      if (auto items = integer_at(*args, "items"); items && *items >= 0) s.items = static_cast<std::uint64_t>(*items);
      s.arg_bytes = number_at(*args, "arg_bytes").value_or(-1);
      s.result_bytes = number_at(*args, "result_bytes").value_or(-1);
      error = text(args, "error", max_name);
    }
    out.end = std::max(out.end, *ts + *dur);
    TaskFigures& task = *row.figures;
    ++task.calls;
    task.items += s.items;
    task.durations.push_back(s.dur);
    if (s.call >= 0) slice_calls.emplace_back(s.call, row.id);
    if (error) {
      ++task.failed;
      ++failed;
      failed_by_type.add(*error);
    } else {
      ++completed;
    }

    TrackState* st = track(*tid);
    if (st) {
      Track& t = st->t;
      ++t.slices;
      if (error) ++t.failed;
      // Track::first_slice as a walk in start order sets it: the first at or after 0, else the last.
      if (*ts >= 0) {
        if (st->min_nonneg < 0 || *ts < st->min_nonneg) st->min_nonneg = *ts;
      } else if (!st->any_neg || *ts > st->max_neg) {
        st->max_neg = *ts;
        st->any_neg = true;
      }
      busy(*st, {*ts, *dur, seq});
    }
    std::int32_t message = -1;
    if (st || error) message = keep(text(args, "message", max_message));
    if (error) {
      KeptFailure k{.f = {}, .task = row.id, .ended = false, .tid = *tid, .seq = seq};
      k.f.ts = s.ts;
      k.f.call = s.call;
      k.f.task_name = strings.intern(task.name.empty() ? clean_text(*name, max_name) : task.name);
      k.f.error = strings.intern(*error);
      k.f.message = message;
      if (st) strings.retain(message);  // one reference for the failure, one for the slice
      if (!st) k.f.track_label = strings.intern(label_of_other(*tid));
      add_failure(std::move(k));
    }
    if (!st) return;
    s.error = keep(std::move(error));
    s.message = message;
    s.first_input = keep(text(args, "first_input", max_name));
    slices.push_back({.s = s, .tid = *tid, .task = row.id, .seq = seq});
    if (slices.size() >= 2 * std::max<std::size_t>(limits.max_slices, 1)) {
      cut(slices, std::max<std::size_t>(limits.max_slices, 1), slices_cut);
      slices_sorted = 0;
    }
  }

  void queue(const rj::Value& e, char ph, std::optional<double> ts, std::size_t line) {
    auto cat = string_at(e, "cat");
    if (cat && *cat != "queue") return;  // another tool's async events
    auto key = id_key(e);
    if (!key || !ts) return skip(line);
    if (ph == 'b') {
      ++queue_begins;
      queue_begin.insert_or_assign(std::move(*key), *ts);
    } else if (auto it = queue_begin.find(*key); it != queue_begin.end()) {
      if (auto call = call_of_id(*key)) wait_of_call.emplace_back(*call, std::max(0.0, *ts - it->second));
      queue_begin.erase(it);
    }
  }

  void counter(std::optional<std::string_view> name, std::optional<double> ts, const rj::Value* args,
               std::size_t line) {
    if (!ts || !args || !args->IsObject()) return skip(line);
    ++out.counters.events;
    std::string prefix = name && *name != "pool" ? clean_text(*name, max_name) + "." : "";
    for (const auto& m : args->GetObject()) {
      if (!m.value.IsNumber() || !std::isfinite(m.value.GetDouble())) continue;
      std::string series = prefix + clean_text(std::string_view(m.name.GetString(), m.name.GetStringLength()), max_name);
      auto it = series_of_name.find(series);
      if (it == series_of_name.end()) {
        if (series_of_name.size() >= limits.max_counter_series) continue;
        it = series_of_name.emplace(series, static_cast<std::uint32_t>(out.counters.names.size())).first;
        out.counters.names.push_back(series);
      }
      counter_samples.push_back({*ts, it->second, m.value.GetDouble()});
    }
  }
};

SummaryBuilder::SummaryBuilder(SummaryLimits limits) {
  limits.max_counter_points = std::max<std::size_t>(limits.max_counter_points, 1);
  state_ = std::make_unique<State>(limits);
}
SummaryBuilder::~SummaryBuilder() = default;

void SummaryBuilder::add(const rj::Value& event, std::size_t line) {
  State& s = *state_;
  ++s.seq;
  auto ph = string_at(event, "ph");
  if (!ph || ph->size() != 1) return s.skip(line);
  auto name = string_at(event, "name");
  auto ts = number_at(event, "ts");
  const rj::Value* args = member(event, "args");
  if (args && !args->IsObject()) args = nullptr;
  if (ts) {
    s.out.begin = s.any_ts ? std::min(s.out.begin, *ts) : *ts;
    s.out.end = s.any_ts ? std::max(s.out.end, *ts) : *ts;
    s.any_ts = true;
  }
  switch ((*ph)[0]) {
    case 'M':
      if (name) s.metadata(event, *name, args, line);
      break;
    case 'X': s.slice(event, name, ts, args, line); break;
    case 'i':
    case 'I':
      if (name) s.instant(event, *name, ts, args, line);
      break;
    case 'b':
    case 'e': s.queue(event, (*ph)[0], ts, line); break;
    case 'C': s.counter(name, ts, args, line); break;
    default: break;  // other phases: not written by ferry, ignored
  }
  if (s.strings.held() >= s.next_text_check) s.check_texts();
}

// ---- finishing ---------------------------------------------------------------------------------

namespace {

void reduce_counters(Counters& c, std::vector<CounterSample>& samples, std::size_t max_counter_points) {
  std::stable_sort(samples.begin(), samples.end(),
                   [](const CounterSample& a, const CounterSample& b) { return a.ts < b.ts; });
  // A `C` event sets the values it names; the others keep theirs (Chrome's reading).
  std::vector<double> current(c.names.size(), 0);
  std::vector<std::pair<double, std::vector<double>>> points;
  for (std::size_t i = 0; i < samples.size();) {
    double ts = samples[i].ts;
    for (; i < samples.size() && samples[i].ts == ts; ++i) current[samples[i].series] = samples[i].value;
    points.emplace_back(ts, current);
  }
  if (points.size() <= max_counter_points) {
    c.points = std::move(points);
    return;
  }
  // Too many to draw: the maximum of each series over each of max_counter_points buckets of the
  // counters' own time span, so that a peak stays visible; a bucket is drawn at its first point.
  // Halves are subtracted: 1e308 - -1e308 would overflow, and an infinite width would make every
  // index NaN (each point a bucket of its own, the cap gone).
  c.reduced = true;
  const double first = points.front().first / 2, last = points.back().first / 2;
  const double width = (last - first) / static_cast<double>(max_counter_points);
  std::size_t bucket = SIZE_MAX;
  std::vector<std::pair<double, std::vector<double>>> reduced;
  for (auto& [ts, values] : points) {
    double index = std::floor((ts / 2 - first) / width);
    // The last point (ts == last) belongs to the last bucket, not to one past it.
    index = std::isfinite(index) ? std::clamp(index, 0.0, static_cast<double>(max_counter_points - 1)) : 0.0;
    if (reduced.empty() || static_cast<std::size_t>(index) != bucket) {
      bucket = static_cast<std::size_t>(index);
      reduced.emplace_back(ts, std::move(values));
    } else {
      auto& top = reduced.back().second;
      for (std::size_t k = 0; k < top.size(); ++k) top[k] = std::max(top[k], values[k]);
    }
  }
  c.points = std::move(reduced);
}

}  // namespace

Summary SummaryBuilder::finish() {
  State& s = *state_;
  Summary& out = s.out;

  // Tasks by name (the table is ordered), each kept name's number to its row; the others
  // together.
  std::map<TaskId, std::uint32_t> task_row;
  out.tasks = s.tasks.take(task_row);
  out.other_tasks = std::move(s.tasks.others());
  out.other_task_names = s.tasks.folded_names();
  auto task_where = [&](TaskId id) {
    auto it = task_row.find(id);
    return it == task_row.end() ? other_task : it->second;
  };
  auto figures_of = [&](TaskId id) -> TaskFigures& {
    const std::uint32_t row = task_where(id);
    return row == other_task ? out.other_tasks : out.tasks[row];
  };

  // Tracks by tid (the map is ordered): the kept ones, their busy windows walked to the end.
  s.merge_other_tids();
  out.tracks_total = s.tracks.size() + s.other_tids.size();
  std::map<std::int64_t, std::uint32_t> track_index;
  for (auto& [tid, st] : s.tracks) {
    for (const BusySlice& b : st.window) State::apply_busy(st, b);
    st.t.first_slice = st.min_nonneg >= 0 ? st.min_nonneg : st.any_neg ? st.max_neg : -1;
    track_index.emplace(tid, static_cast<std::uint32_t>(out.tracks.size()));
    out.tracks.push_back(std::move(st.t));
  }

  // The records of tracks no longer kept go, and give their strings back.
  s.cut(s.slices, SIZE_MAX, s.slices_cut);
  s.cut(s.marks, SIZE_MAX, s.marks_cut);

  // Failed slices of a track kept when they were read that a lower tid replaced since: its label
  // now (the one it had when replaced, or a later thread_name), interned with the other strings.
  for (KeptFailure& k : s.failures) {
    if (k.ended || k.f.track_label >= 0 || track_index.count(k.tid) != 0) continue;
    k.f.track_label = s.strings.intern(s.label_of_other(k.tid));
  }

  // The strings the kept records use, renumbered: RefStrings holds each text once, and each is
  // moved once into the summary's table, which so holds each once too.
  s.strings.drop_index();
  std::vector<std::int32_t> renumbered(s.strings.size(), -1);
  auto text = [&](std::int32_t& i) {
    if (i < 0) return;
    std::int32_t& to = renumbered[static_cast<std::size_t>(i)];
    if (to < 0) to = s.strings.is_let_go(i) ? out.strings.add_let_go(s.strings.page_bytes(i)) : out.strings.add(s.strings.take(i));
    i = to;
  };
  // Queue waits by call; of an id's `e`s, the last read wins (the sort is stable).
  std::stable_sort(s.wait_of_call.begin(), s.wait_of_call.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  auto wait_of = [&](std::int64_t call) -> std::optional<double> {
    if (call < 0) return std::nullopt;
    auto it = std::upper_bound(s.wait_of_call.begin(), s.wait_of_call.end(), call,
                               [](std::int64_t c, const auto& w) { return c < w.first; });
    if (it == s.wait_of_call.begin() || std::prev(it)->first != call) return std::nullopt;
    return std::prev(it)->second;
  };
  auto partial = [](auto& kept, const CutFloor& floor, std::size_t cap) {
    std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.order() < b.order(); });
    if (!floor.cut) return false;
    std::size_t before = 0;
    for (const auto& k : kept) before += k.order() < floor.floor;
    return before < cap;
  };
  out.slices_partial = partial(s.slices, s.slices_cut, std::max<std::size_t>(s.limits.max_slices, 1));
  out.slices.reserve(s.slices.size());
  for (KeptSlice& k : s.slices) {
    Slice& sl = k.s;
    sl.track = track_index.at(k.tid);
    sl.task = task_where(k.task);
    if (auto wait = wait_of(sl.call)) sl.wait = *wait;
    text(sl.error);
    text(sl.message);
    text(sl.first_input);
    out.slices.push_back(sl);
  }
  std::vector<KeptSlice>().swap(s.slices);
  out.marks_partial = partial(s.marks, s.marks_cut, std::max<std::size_t>(s.limits.max_marks, 1));
  out.marks.reserve(s.marks.size());
  for (KeptMark& k : s.marks) {
    k.m.track = track_index.at(k.tid);
    text(k.m.reason);
    text(k.m.error);
    out.marks.push_back(k.m);
  }
  std::vector<KeptMark>().swap(s.marks);
  std::sort(s.failures.begin(), s.failures.end());
  out.failures.reserve(s.failures.size());
  for (KeptFailure& k : s.failures) {
    Failure& f = k.f;
    f.task = task_where(k.task);
    if (f.task == other_task) {
      text(f.task_name);
    } else {
      f.task_name = -1;  // its row names it
    }
    if (!k.ended && f.track_label < 0) f.track = track_index.at(k.tid);  // a failed slice of a kept track
    text(f.error);
    text(f.message);
    text(f.track_label);
    out.failures.push_back(f);
  }
  std::vector<KeptFailure>().swap(s.failures);

  // Queue waits: each slice's call, matched with the last `e` of its id.
  for (const auto& [call, task] : s.slice_calls) {
    if (auto wait = wait_of(call)) figures_of(task).waits.push_back(*wait);
  }
  auto sort_figures = [](TaskFigures& task) {
    std::sort(task.durations.begin(), task.durations.end());
    std::sort(task.waits.begin(), task.waits.end());
  };
  for (TaskFigures& task : out.tasks) sort_figures(task);
  sort_figures(out.other_tasks);

  out.queued_at_end = s.queue_begin.size();
  reduce_counters(out.counters, s.counter_samples, s.limits.max_counter_points);
  if (!out.has_stats) {
    // The stats of a trace without a `stats` event, from its events. One row per error type and
    // per exit reason: as many as a hostile trace has distinct names, so they stop at
    // max_stat_rows (as flatten() does); the fixed rows always come.
    auto row = [&](std::string name, std::size_t n) { out.stats.push_back({std::move(name), std::to_string(n)}); };
    const std::size_t max_stat_rows = s.limits.max_stat_rows;
    row("submitted", s.queue_begins);
    row("completed", s.completed);
    row("failed", s.failed);
    for (const auto& [type, n] : s.failed_by_type.counts()) {
      if (out.stats.size() >= max_stat_rows) break;
      row("failed_by_type." + type, n);
    }
    row("never_ran", s.never_ran);
    row("queued_at_end", out.queued_at_end);
    row("workers_started", s.started);
    row("workers_crashed", s.crashed);
    for (const auto& [reason, n] : s.exited_by_reason.counts()) {
      if (out.stats.size() >= max_stat_rows) break;
      row("workers_exited." + reason, n);
    }
  }
  return std::move(out);
}

}  // namespace ferry::cli::trace
