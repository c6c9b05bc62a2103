// SPDX-License-Identifier: BSD-3-Clause
#include "trace_run.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <set>
#include <tuple>
#include <utility>

#include "platform/fd.hpp"
#include "trace_reader.hpp"
#include "trace_summary.hpp"

namespace ferry::cli::trace {

namespace fs = std::filesystem;

namespace {

/// A number FERRY_TRACE puts in a name: 2 or more, without leading zeros (FERRY_TRACE_FILES is at
/// most 10,000).
bool is_number_from_2(std::string_view s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string_view::npos &&
         s.front() != '0' && s != "1";
}

/// Whether `extension` (".N", from fs::path::extension) is such a number.
bool is_numbered(const fs::path& extension) {
  const std::string e = extension.string();
  return e.size() > 1 && is_number_from_2(std::string_view(e).substr(1));
}

/// "NAME.EXT" of "NAME.N.EXT" (and "NAME" of "NAME.N"): the path FERRY_TRACE was given, as its
/// N-th name is made (host/trace.cpp, numbered_path); the path itself when it is no numbered name.
fs::path first_name(const fs::path& trace) {
  const fs::path name = trace.filename();
  if (is_numbered(name.extension())) return trace.parent_path() / name.stem();
  const fs::path stem = name.stem();
  if (is_numbered(stem.extension())) return trace.parent_path() / (stem.stem().string() + name.extension().string());
  return trace;
}

std::string utc_text(std::int64_t unix_us) {
  const std::time_t seconds = static_cast<std::time_t>(unix_us / 1'000'000);
  std::tm tm{};
  char text[64];
  if (unix_us < 0 || !::gmtime_r(&seconds, &tm) || std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    return "at " + std::to_string(unix_us) + " µs past 1970";
  return text;
}

const rj::Value* member(const rj::Value& object, const char* name) {
  if (!object.IsObject()) return nullptr;
  auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

}  // namespace

std::optional<RunHeader> read_run_header(const fs::path& path, bool follow, std::optional<unsigned> owner) {
  // Never waits: a FIFO put at a trace's name is opened without a writer and refused, as is any
  // file that is not regular.
  ferry::detail::Fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | (follow ? 0 : O_NOFOLLOW)));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  if (owner && st.st_uid != *owner) return std::nullopt;  // another user's file: not read
  std::string text(run_header_bytes, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::pread(fd.get(), text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  std::optional<RunHeader> found;
  ReadResult result;
  // The first `ferry` metadata event is the header; what follows it in the prefix, cut anywhere,
  // does not matter (read_trace_text's verdict on the rest is not looked at).
  read_trace_text(text, [&](const rj::Value& event, std::size_t) {
    if (found) return;
    const rj::Value* ph = member(event, "ph");
    const rj::Value* name = member(event, "name");
    if (!ph || !ph->IsString() || std::string_view(ph->GetString()) != "M" || !name || !name->IsString() ||
        std::string_view(name->GetString()) != "ferry")
      return;
    const rj::Value* args = member(event, "args");
    const rj::Value* pid = member(event, "pid");
    const rj::Value* sequence = args ? member(*args, "sequence") : nullptr;
    const rj::Value* run = args ? member(*args, "run_started_unix_us") : nullptr;
    const rj::Value* host = args ? member(*args, "host") : nullptr;
    if (!pid || !pid->IsInt64() || !sequence || !sequence->IsUint64() || !run || !run->IsInt64()) return;
    RunHeader h;
    h.owner = st.st_uid;
    h.pid = pid->GetInt64();
    h.sequence = sequence->GetUint64();
    h.run_started_unix_us = run->GetInt64();
    if (host && host->IsString()) h.host = clean_text(std::string_view(host->GetString(), host->GetStringLength()), 64);
    found = std::move(h);
  }, result);
  return found;
}

std::vector<fs::path> run_file_names(const fs::path& trace) {
  const fs::path first = first_name(trace);
  const std::string first_file = first.filename().string();
  const std::string stem = first.stem().string() + ".";
  const std::string extension = first.extension().string();
  const fs::path dir = trace.parent_path().empty() ? fs::path(".") : trace.parent_path();
  std::vector<fs::path> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool numbered = name.size() > stem.size() + extension.size() && name.compare(0, stem.size(), stem) == 0 &&
                          name.compare(name.size() - extension.size(), extension.size(), extension) == 0 &&
                          is_number_from_2(std::string_view(name).substr(stem.size(), name.size() - stem.size() - extension.size()));
    if (name != first_file && !numbered) continue;
    names.push_back(trace.parent_path() / name);
    if (names.size() > max_run_files) break;
  }
  return names;
}

std::optional<std::string> run_note(const fs::path& trace) {
  const std::optional<RunHeader> own = read_run_header(trace, true, std::nullopt);
  if (!own) return std::nullopt;
  std::vector<fs::path> names = run_file_names(trace);
  const bool more = names.size() > max_run_files;
  if (more) names.resize(max_run_files);

  std::vector<std::pair<std::uint64_t, std::string>> this_run{{own->sequence, trace.filename().string()}};
  std::vector<std::pair<std::uint64_t, std::string>> other_files;  // by sequence
  std::set<std::tuple<std::int64_t, std::string, std::int64_t>> other_runs;
  std::int64_t latest_other = 0;
  for (const fs::path& p : names) {
    if (p.filename() == trace.filename()) continue;
    // Beside the trace, only files ferry could have written: never through a link.
    const std::optional<RunHeader> h = read_run_header(p, false, own->owner);
    if (!h) continue;
    if (h->same_run(*own)) {
      this_run.emplace_back(h->sequence, p.filename().string());
    } else {
      other_files.emplace_back(h->sequence, p.filename().string());
      other_runs.emplace(h->pid, h->host, h->run_started_unix_us);
      latest_other = std::max(latest_other, h->run_started_unix_us);
    }
  }
  std::sort(this_run.begin(), this_run.end());
  std::sort(other_files.begin(), other_files.end());

  constexpr std::size_t shown = 12;
  std::string note = "A file of FERRY_TRACE: trace " + std::to_string(own->sequence) + " of the run of process " +
                     std::to_string(own->pid) + (own->host.empty() ? "" : " on " + own->host) + " that started " +
                     utc_text(own->run_started_unix_us) + ".";
  if (this_run.size() == 1) {
    note += " No other file of that run is beside it.";
  } else {
    note += " The files of that run beside it, by sequence:";
    for (std::size_t i = 0; i < this_run.size() && i < shown; ++i)
      note += std::string(i ? ", " : " ") + this_run[i].second + " (" + std::to_string(this_run[i].first) + ")";
    if (this_run.size() > shown)
      note += " and " + std::to_string(this_run.size() - shown) + " more, the newest " + this_run.back().second +
              " (" + std::to_string(this_run.back().first) + ")";
    note += ".";
  }
  if (!other_files.empty()) {
    note += " " + std::to_string(other_files.size()) + (other_files.size() == 1 ? " file" : " files") +
            " of its names " + (other_files.size() == 1 ? "is" : "are") + " of " +
            (other_runs.size() == 1 ? "another run" : std::to_string(other_runs.size()) + " other runs") +
            " (the latest started " + utc_text(latest_other) + "), not of this one:";
    for (std::size_t i = 0; i < other_files.size() && i < shown; ++i)
      note += std::string(i ? ", " : " ") + other_files[i].second;
    if (other_files.size() > shown) note += " and " + std::to_string(other_files.size() - shown) + " more";
    note += " (a run writes over the first names and leaves the others).";
  }
  if (more) note += " Only the first " + std::to_string(max_run_files) + " of its names in the directory were read.";
  return note;
}

}  // namespace ferry::cli::trace
