// SPDX-License-Identifier: BSD-3-Clause
// From trace events to what the report shows. Events are read once, in file order; everything that
// needs the whole trace (sorting, matching queue waits to slices, busy time) happens in finish().
//
// Lenient where the format (docs/trace-format.md) allows two readings, strict about nothing: an
// event without the fields its kind needs is counted as skipped, never an error, since the file
// may come from a host that died or from someone else's tool.
#include "trace_summary.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <optional>

#include "platform/format.hpp"

namespace ferry::cli::trace {

// ---- helpers -----------------------------------------------------------------------------------

std::int32_t StringTable::intern(std::string_view s) {
  auto it = index_.lower_bound(s);
  if (it != index_.end() && it->first == s) return it->second;
  const auto index = static_cast<std::int32_t>(strings_.size());
  index_.emplace_hint(it, std::string(s), index);
  strings_.emplace_back(s);
  return index;
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

struct CounterSample {
  double ts;
  std::uint32_t series;
  double value;
};

}  // namespace

// ---- reading -----------------------------------------------------------------------------------

struct SummaryBuilder::State {
  SummaryLimits limits;
  Summary out;
  // Every map keyed by text of the trace is ordered, never hashed: libstdc++'s std::hash of a
  // string has collisions that hold for any seed, and n distinct colliding keys (task names, ids)
  // would take O(n²) to insert; here each lookup is O(log n) comparisons.
  std::map<std::int64_t, std::uint32_t> track_of_tid;
  std::map<std::string, std::uint32_t, std::less<>> task_of_name;
  std::map<std::string, double, std::less<>> queue_begin;     ///< id → ts of its `b`
  std::map<std::string, double, std::less<>> wait_of_call;    ///< id → queue wait
  std::size_t queue_begins = 0;
  std::vector<CounterSample> counter_samples;
  std::map<std::string, std::uint32_t, std::less<>> series_of_name;
  bool any_ts = false;

  void skip(std::size_t line) {
    if (out.skipped++ == 0) out.first_skipped_line = line;
  }

  std::uint32_t track(std::int64_t tid) {
    auto [it, added] = track_of_tid.try_emplace(tid, static_cast<std::uint32_t>(out.tracks.size()));
    if (added) {
      Track t;
      t.tid = tid;
      t.label = tid == 0 ? "pool (track 0)" : "track " + std::to_string(tid);
      out.tracks.push_back(std::move(t));
    }
    return it->second;
  }

  std::uint32_t task(std::string_view name) {
    std::string clean = clean_text(name, max_name);
    auto [it, added] = task_of_name.try_emplace(clean, static_cast<std::uint32_t>(out.tasks.size()));
    if (added) out.tasks.push_back(TaskFigures{.name = std::move(clean)});
    return it->second;
  }

  std::int32_t text(const rj::Value* args, const char* name, std::size_t max) {
    const rj::Value* v = args ? member(*args, name) : nullptr;
    if (!v || v->IsNull()) return -1;
    return out.strings.intern(display_text(*v, max));
  }

  void metadata(const rj::Value& e, std::string_view name, const rj::Value* args, std::size_t line) {
    if (name == "thread_name") {
      auto tid = integer_at(e, "tid");
      auto label = args ? string_at(*args, "name") : std::nullopt;
      if (!tid || !label) return skip(line);
      out.tracks[track(*tid)].label = clean_text(*label, max_name);
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
      return;
    }
    if (!ts) return skip(line);
    if (name == "call ended") {
      auto task_name = args ? string_at(*args, "task") : std::nullopt;
      Failure f;
      f.ts = *ts;
      f.call = args ? integer_at(*args, "call").value_or(-1) : -1;
      f.task = task(task_name.value_or("(unnamed)"));
      f.error = text(args, "error", max_name);
      f.message = text(args, "message", max_message);
      ++out.tasks[f.task].never_ran;
      out.failures.push_back(f);
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
    Mark m{.kind = kind, .ts = *ts, .track = track(*tid), .reason = text(args, "reason", max_name),
           .error = text(args, "error", max_name)};
    Track& t = out.tracks[m.track];
    if (kind == Mark::Kind::start) {
      if (t.start < 0) t.start = *ts;
    } else if (t.end_kind == Track::End::alive || *ts < t.end) {
      // The first end wins: a track's worker ends once.
      t.end = *ts;
      t.end_kind = kind == Mark::Kind::exit ? Track::End::exit : Track::End::crash;
      t.end_reason = m.reason >= 0 ? out.strings.strings()[static_cast<std::size_t>(m.reason)] : "";
      t.end_error = m.error >= 0 ? out.strings.strings()[static_cast<std::size_t>(m.error)] : "";
    }
    out.marks.push_back(m);
  }

  void slice(const rj::Value& e, std::optional<std::string_view> name, std::optional<double> ts,
             const rj::Value* args, std::size_t line) {
    auto dur = number_at(e, "dur");
    auto tid = integer_at(e, "tid");
    if (!name || !ts || !dur || !tid || *dur < 0) return skip(line);
    Slice s;
    s.ts = *ts;
    s.dur = *dur;
    s.track = track(*tid);
    s.task = task(*name);
    if (args) {
      s.call = integer_at(*args, "call").value_or(-1);
      if (auto items = integer_at(*args, "items"); items && *items >= 0) s.items = static_cast<std::uint64_t>(*items);
      s.arg_bytes = number_at(*args, "arg_bytes").value_or(-1);
      s.result_bytes = number_at(*args, "result_bytes").value_or(-1);
      s.error = text(args, "error", max_name);
      s.message = text(args, "message", max_message);
      s.first_input = text(args, "first_input", max_name);
    }
    out.end = std::max(out.end, *ts + *dur);
    out.slices.push_back(s);
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
      wait_of_call.insert_or_assign(std::move(*key), std::max(0.0, *ts - it->second));
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

SummaryBuilder::SummaryBuilder(SummaryLimits limits) : state_(std::make_unique<State>()) {
  limits.max_counter_points = std::max<std::size_t>(limits.max_counter_points, 1);
  state_->limits = limits;
}
SummaryBuilder::~SummaryBuilder() = default;

void SummaryBuilder::add(const rj::Value& event, std::size_t line) {
  State& s = *state_;
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
}

// ---- finishing ---------------------------------------------------------------------------------

namespace {

/// `order[new] = old` → `where[old] = new`.
std::vector<std::uint32_t> inverse(const std::vector<std::uint32_t>& order) {
  std::vector<std::uint32_t> where(order.size());
  for (std::uint32_t i = 0; i < order.size(); ++i) where[order[i]] = i;
  return where;
}

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

/// The stats of a trace without a `stats` event, from its events.
void computed_stats(Summary& out, std::size_t queue_begins, std::size_t max_stat_rows) {
  std::size_t completed = 0, failed = 0, never_ran = 0, started = 0, crashed = 0;
  std::map<std::string, std::size_t> failed_by_type, exited_by_reason;
  auto error_name = [&](std::int32_t e) { return out.strings.strings()[static_cast<std::size_t>(e)]; };
  for (const Slice& s : out.slices) {
    if (s.error < 0) {
      ++completed;
    } else {
      ++failed;
      ++failed_by_type[error_name(s.error)];
    }
  }
  for (const Failure& f : out.failures) {
    if (f.track >= 0) continue;  // a failed slice, counted above
    ++never_ran;
    if (f.error >= 0) {
      ++failed;
      ++failed_by_type[error_name(f.error)];
    }
  }
  for (const Mark& m : out.marks) {
    if (m.kind == Mark::Kind::start) ++started;
    if (m.kind == Mark::Kind::crash) ++crashed;
    if (m.kind == Mark::Kind::exit) ++exited_by_reason[m.reason >= 0 ? error_name(m.reason) : "(none)"];
  }
  auto row = [&](std::string name, std::size_t n) { out.stats.push_back({std::move(name), std::to_string(n)}); };
  row("submitted", queue_begins);
  row("completed", completed);
  row("failed", failed);
  // One row per error type and per exit reason: as many as a hostile trace has distinct names,
  // so they stop at max_stat_rows (as flatten() does); the fixed rows always come.
  for (const auto& [type, n] : failed_by_type) {
    if (out.stats.size() >= max_stat_rows) break;
    row("failed_by_type." + type, n);
  }
  row("never_ran", never_ran);
  row("queued_at_end", out.queued_at_end);
  row("workers_started", started);
  row("workers_crashed", crashed);
  for (const auto& [reason, n] : exited_by_reason) {
    if (out.stats.size() >= max_stat_rows) break;
    row("workers_exited." + reason, n);
  }
}

}  // namespace

Summary SummaryBuilder::finish() {
  State& s = *state_;
  Summary& out = s.out;

  // Tracks by tid (the map is ordered), tasks by name; slices, marks and failures follow.
  std::vector<std::uint32_t> track_order;
  for (const auto& [tid, index] : s.track_of_tid) track_order.push_back(index);
  std::vector<std::uint32_t> track_where = inverse(track_order);
  std::vector<std::uint32_t> task_order(out.tasks.size());
  std::iota(task_order.begin(), task_order.end(), 0u);
  std::sort(task_order.begin(), task_order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return out.tasks[a].name < out.tasks[b].name; });
  std::vector<std::uint32_t> task_where = inverse(task_order);
  {
    std::vector<Track> tracks;
    for (auto i : track_order) tracks.push_back(std::move(out.tracks[i]));
    out.tracks = std::move(tracks);
    std::vector<TaskFigures> tasks;
    for (auto i : task_order) tasks.push_back(std::move(out.tasks[i]));
    out.tasks = std::move(tasks);
  }
  for (Mark& m : out.marks) m.track = track_where[m.track];
  for (Failure& f : out.failures) f.task = task_where[f.task];

  std::stable_sort(out.slices.begin(), out.slices.end(), [](const Slice& a, const Slice& b) { return a.ts < b.ts; });
  std::vector<double> busy_until(out.tracks.size(), -std::numeric_limits<double>::infinity());
  for (Slice& sl : out.slices) {
    sl.track = track_where[sl.track];
    sl.task = task_where[sl.task];
    if (sl.call >= 0) {
      if (auto it = s.wait_of_call.find(std::to_string(sl.call)); it != s.wait_of_call.end()) sl.wait = it->second;
    }
    Track& t = out.tracks[sl.track];
    if (t.first_slice < 0) t.first_slice = sl.ts;
    ++t.slices;
    // Busy time is the union of the slices: in start order, only what reaches past the previous
    // end counts (a worker runs one call at a time, but a trace is not trusted to say so).
    double end = sl.ts + sl.dur;
    double& until = busy_until[sl.track];
    if (end > until) {
      t.busy += end - std::max(sl.ts, until);
      until = end;
    }
    TaskFigures& task = out.tasks[sl.task];
    ++task.calls;
    task.items += sl.items;
    task.durations.push_back(sl.dur);
    if (sl.wait >= 0) task.waits.push_back(sl.wait);
    if (sl.error >= 0) {
      ++task.failed;
      ++t.failed;
      out.failures.push_back({.ts = sl.ts, .call = sl.call, .task = sl.task,
                              .track = static_cast<std::int64_t>(sl.track), .error = sl.error,
                              .message = sl.message});
    }
  }
  for (TaskFigures& task : out.tasks) {
    std::sort(task.durations.begin(), task.durations.end());
    std::sort(task.waits.begin(), task.waits.end());
  }
  std::stable_sort(out.marks.begin(), out.marks.end(), [](const Mark& a, const Mark& b) { return a.ts < b.ts; });
  std::stable_sort(out.failures.begin(), out.failures.end(),
                   [](const Failure& a, const Failure& b) { return a.ts < b.ts; });

  out.queued_at_end = s.queue_begin.size();
  reduce_counters(out.counters, s.counter_samples, s.limits.max_counter_points);
  if (!out.has_stats) computed_stats(out, s.queue_begins, s.limits.max_stat_rows);
  return std::move(out);
}

}  // namespace ferry::cli::trace
