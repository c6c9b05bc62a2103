// SPDX-License-Identifier: BSD-3-Clause
// `ferry report` (issue 15, item 3), run as a real program on the traces of tests/data/trace/
// (hand-written after docs/trace-format.md), and its page opened in a real browser (Debian's
// chromium, headless).
//
// basic.json: 3 workers (5001, 5002, and 5003 replacing 5002 after it crashed), 20 calls of add,
// slow_sum and square, one TaskError, the call the crash interrupted (TerminatedWorkerError), one
// call cancelled while queued (call ended), queue b/e for every call, counters, stats, ']'.
// no_bracket.json: the same without ']'. killed.json: cut at 12 ms, ending with half a line.
// hostile.json: markup and script in names, labels, messages and stats; NaN, Infinity, invalid
// UTF-8; events without their fields. garbage.txt, deep.json (nested 600 levels): not traces.
//
// In-process (the reader, summary and page compiled in): the replay of the trace fuzzer's corpus
// (tests/fuzz/trace_fuzz.hpp) and the reader's blocks.
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <ferry/detail/json_archive.hpp>

#include "fuzz/trace_fuzz.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"

namespace {

namespace fs = std::filesystem;
namespace json = ferry::detail::json;

const fs::path data_dir = fs::path(FERRY_TEST_DATA_DIR) / "trace";

using Ran = support::ProcessResult;
using support::read_file;

/// Runs `argv` to its end, stdin from /dev/null, stdout/stderr into files of `dir`, the
/// environment changed by `env` ("" unsets).
Ran run(const std::vector<std::string>& argv, const fs::path& dir,
        const std::map<std::string, std::string>& env = {}) {
  return support::run(argv, dir, {.env = env});
}

/// `ferry report ARGS...`
Ran report(std::vector<std::string> args, const fs::path& dir) {
  args.insert(args.begin(), {FERRY_TEST_CLI, "report"});
  return run(args, dir);
}

/// The text of the page's data element: the JSON the script draws.
std::string embedded_json(const std::string& html) {
  const std::string open = "<script type=\"application/json\" id=\"trace-data\">";
  auto begin = html.find(open);
  REQUIRE(begin != std::string::npos);
  begin += open.size();
  auto end = html.find("</script>", begin);
  REQUIRE(end != std::string::npos);
  return html.substr(begin, end - begin);
}

/// The page's data, parsed.
void page_data(const fs::path& html, json::Document& doc) {
  std::string error;
  REQUIRE_MESSAGE(ferry::detail::parse_json(embedded_json(read_file(html)), doc, error), error);
  REQUIRE(doc.IsObject());
}

std::string str(const json::Value& v) { return std::string(v.GetString(), v.GetStringLength()); }

/// A value as compact JSON text: 21 for a number, "21" (with its quotes) for a string.
std::string json_text(const json::Value& v) {
  json::StringBuffer out;
  json::Writer<json::StringBuffer> w(out);
  v.Accept(w);
  return std::string(out.GetString(), out.GetSize());
}

/// Writes a trace as ferry does: "[", one event a line, "]".
void write_trace(const fs::path& p, const std::vector<std::string>& events) {
  std::ofstream out(p, std::ios::binary);
  out << "[\n";
  for (std::size_t i = 0; i < events.size(); ++i) out << events[i] << (i + 1 < events.size() ? ",\n" : "\n");
  out << "]\n";
}

/// 5000 points of the pool's `queued` counter, 1 µs apart from ts 10: i % 5, but 999 at the
/// 2501st (the peak a reduction must keep).
void add_pool_counter_points(std::vector<std::string>& events) {
  for (int i = 0; i < 5000; ++i)
    events.push_back(R"({"name":"pool","ph":"C","ts":)" + std::to_string(10 + i) +
                     R"(,"pid":1,"tid":0,"args":{"queued":)" + std::to_string(i == 2500 ? 999 : i % 5) + "}}");
}

/// A string of `n` times `c`, and the same as `ferry report` keeps it when it is longer than `max`
/// bytes: the first `max`, then "…".
std::string repeated(std::size_t n, char c) { return std::string(n, c); }
std::string cut(std::size_t max, char c) { return std::string(max, c) + "\xE2\x80\xA6"; }

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

const json::Value& task_row(const json::Document& doc, const std::string& name) {
  for (const auto& t : doc["tasks"].GetArray())
    if (str(t["name"]) == name) return t;
  FAIL("no task row named " << name);
  throw std::logic_error("unreachable");
}

std::vector<std::string> notes(const json::Document& doc) {
  std::vector<std::string> out;
  for (const auto& n : doc["notes"].GetArray()) out.push_back(str(n[0]));
  return out;
}

/// Serialized DOM with every attribute value emptied: the serializer writes them between double
/// quotes (a quote inside as &quot;), and text nodes hold no '<' (it is &lt;), so what is left
/// of '<' is markup. A loop rather than std::regex, whose matcher recurses per character.
std::string without_attribute_values(const std::string& dom) {
  std::string out;
  out.reserve(dom.size());
  for (std::size_t i = 0; i < dom.size(); ++i) {
    out += dom[i];
    if (dom[i] == '=' && i + 1 < dom.size() && dom[i + 1] == '"') {
      auto close = dom.find('"', i + 2);
      if (close == std::string::npos) break;
      out += "\"\"";
      i = close;
    }
  }
  return out;
}

bool any_contains(const std::vector<std::string>& texts, const std::string& what) {
  for (const auto& t : texts)
    if (t.find(what) != std::string::npos) return true;
  return false;
}

/// `s` as a JSON string, quotes included.
std::string quoted(const std::string& s) {
  json::StringBuffer out;
  json::Writer<json::StringBuffer> w(out);
  w.String(s.data(), static_cast<json::SizeType>(s.size()));
  return std::string(out.GetString(), out.GetSize());
}

/// 2^bits distinct strings of 16 × bits bytes (0x01 to 0x7E) that libstdc++'s
/// std::hash<std::string> (_Hash_bytes, a 64-bit MurmurHash) maps to one value, whatever its seed.
/// It XORs each 8-byte block, mixed (x·m, x ^= x >> 47, x·m), into its state and multiplies the
/// state by m (odd). Two blocks whose mixed values differ in bit 63 only leave states that differ in
/// bit 63 only (2^63 times an odd number is 2^63 mod 2^64), and a second such pair of blocks cancels
/// that: so each 16-byte piece has two forms of the same effect, and the strings are every choice of
/// `bits` pieces. Traces of such strings made `ferry report`'s hash maps quadratic.
std::vector<std::string> colliding_strings(unsigned bits) {
  constexpr std::uint64_t m = 0xc6a4a7935bd1e995ULL;
  std::uint64_t inverse = m;  // m · inverse = 1 mod 2^64: Newton's iteration doubles the bits right
  for (int i = 0; i < 6; ++i) inverse *= 2 - m * inverse;
  auto shift_mix = [](std::uint64_t v) { return v ^ (v >> 47); };  // its own inverse
  // The block whose mixed value is `mixed`, if its bytes are all 0x01 to 0x7E.
  auto block = [&](std::uint64_t mixed, std::string& out) {
    std::uint64_t x = shift_mix(mixed * inverse) * inverse;
    for (int i = 0; i < 8; ++i)
      if (const auto c = (x >> (8 * i)) & 0xFF; c < 0x01 || c > 0x7E) return false;
    for (int i = 0; i < 8; ++i) out += static_cast<char>((x >> (8 * i)) & 0xFF);  // little-endian
    return true;
  };
  std::mt19937_64 random(1);
  auto half = [&](std::string& a, std::string& b) {
    for (;;) {
      const std::uint64_t mixed = random();
      std::string x, y;
      if (block(mixed, x) && block(mixed ^ (std::uint64_t{1} << 63), y)) {
        a += x;
        b += y;
        return;
      }
    }
  };
  std::vector<std::pair<std::string, std::string>> pieces(bits);
  for (auto& [a, b] : pieces) {
    half(a, b);
    half(a, b);
  }
  std::vector<std::string> out;
  for (std::size_t k = 0; k < (std::size_t{1} << bits); ++k) {
    std::string s;
    for (unsigned i = 0; i < bits; ++i) s += ((k >> i) & 1) ? pieces[i].second : pieces[i].first;
    out.push_back(std::move(s));
  }
  return out;
}

/// Whether `text` holds DEL or a C1 control (UTF-8 C2 80 to C2 9F) anywhere.
bool has_del_or_c1(const std::string& text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto u = static_cast<unsigned char>(text[i]);
    if (u == 0x7F) return true;
    if (u == 0xC2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
        static_cast<unsigned char>(text[i + 1]) <= 0x9F)
      return true;
  }
  return false;
}

}  // namespace

TEST_CASE("Report.reads_a_trace_without_its_closing_bracket") {
  support::TempDir dir;
  SUBCASE("no closing bracket: everything is there") {
    Ran r = report({(data_dir / "no_bracket.json").string(), "-o", (dir.path / "r.html").string()}, dir.path);
    REQUIRE_MESSAGE(r.status == 0, r.err);
    json::Document doc;
    page_data(dir.path / "r.html", doc);
    CHECK(doc["slices_total"].GetUint64() == 20);
    CHECK(str(doc["stats"]["source"]) == "trace");
    CHECK(any_contains(notes(doc), "no closing ']'"));
  }
  SUBCASE("a killed host: no stats, a trailing comma, half a last line") {
    Ran r = report({(data_dir / "killed.json").string(), "-o", (dir.path / "r.html").string()}, dir.path);
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(r.err.find("killed.json: The last event (line 77") != std::string::npos);
    json::Document doc;
    page_data(dir.path / "r.html", doc);
    CHECK(doc["slices_total"].GetUint64() == 17);  // the calls that ended before 12 ms
    CHECK(str(doc["stats"]["source"]) == "computed");
    std::map<std::string, std::string> stats;
    for (const auto& row : doc["stats"]["rows"].GetArray())
      stats[str(row[0])] = row[1].IsString() ? str(row[1]) : std::to_string(row[1].GetUint64());
    CHECK(stats["completed"] == "15");
    CHECK(stats["failed"] == "2");
    CHECK(stats["failed_by_type.TaskError"] == "1");
    CHECK(stats["failed_by_type.TerminatedWorkerError"] == "1");
    CHECK(stats["workers_started"] == "3");
    CHECK(stats["workers_crashed"] == "1");
    auto n = notes(doc);
    CHECK(any_contains(n, "dropped: it is incomplete"));
    CHECK(any_contains(n, "no stats event"));
  }
}

TEST_CASE("Report.refuses_a_file_that_is_not_a_trace") {
  support::TempDir dir;
  const fs::path out = dir.path / "r.html";
  struct Case {
    std::string file;
    std::string message;  ///< expected on stderr
  };
  std::ofstream(dir.path / "empty.json").close();
  std::ofstream(dir.path / "objects.json") << "[\n{\"id\": 1, \"name\": \"x\"},\n{\"id\": 2}\n]\n";
  // One event past the reader's bound (16 MiB): refused, not read into memory whole.
  std::ofstream(dir.path / "huge.json") << "[\n{\"ph\":\"i\",\"name\":\"" << std::string(17u << 20, 'a')
                                        << "\"}\n]\n";
  std::vector<Case> cases = {
      {(data_dir / "garbage.txt").string(), "garbage.txt:1: not a trace file: it starts with \"this is not"},
      {FERRY_TEST_CLI, ":1: not a trace file: it starts with \"\\x7fELF"},  // a binary
      {(data_dir / "deep.json").string(), "deep.json:2: an event nested deeper than 512 levels"},
      {(dir.path / "empty.json").string(), "empty.json:1: not a trace file: it is empty"},
      {(dir.path / "huge.json").string(), "huge.json:2: an event larger than 16 MiB"},
      {(dir.path / "missing.json").string(), "missing.json: No such file or directory"},
      // Some other JSON array of objects (the wrong file): it made an empty page, status 0.
      {(dir.path / "objects.json").string(),
       "objects.json:2: not a trace file: none of its 2 objects has a \"ph\" (an event's phase in the "
       "Chrome Trace Event format)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.file);
    Ran r = report({c.file, "-o", out.string()}, dir.path);
    CHECK(r.status == 2);
    CHECK_MESSAGE(r.err.find("ferry report: ") == 0, r.err);
    CHECK_MESSAGE(r.err.find(c.message) != std::string::npos, r.err);
    CHECK(!fs::exists(out));
  }
  // An event that is not JSON is the end of a killed trace only when nothing follows it.
  std::ofstream(dir.path / "middle.json") << "[\n{\"ph\":\"i\",\"ts\":1,}\n{\"ph\":\"i\",\"ts\":2},\n";
  Ran r = report({(dir.path / "middle.json").string(), "-o", out.string()}, dir.path);
  CHECK(r.status == 2);
  CHECK_MESSAGE(r.err.find("middle.json:2: an event that is not valid JSON") != std::string::npos, r.err);
  // Nor may the report overwrite its trace.
  fs::copy_file(data_dir / "basic.json", dir.path / "same.html");
  r = report({(dir.path / "same.html").string()}, dir.path);
  CHECK(r.status == 2);
  CHECK(r.err.find("would overwrite the trace") != std::string::npos);
}

TEST_CASE("Report.reads_a_trace_saved_with_a_byte_order_mark") {
  // An editor's "UTF-8 with BOM" puts EF BB BF before the '[': the report refused the trace as
  // not starting with '['. The mark is skipped there, and only there; part of one is no trace.
  support::TempDir dir;
  const std::string bom = "\xEF\xBB\xBF";
  support::write_file(dir.path / "bom.json", bom + read_file(data_dir / "basic.json"));
  Ran r = report({(dir.path / "bom.json").string(), "-o", (dir.path / "r.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  json::Document doc;
  page_data(dir.path / "r.html", doc);
  CHECK(doc["slices_total"].GetUint64() == 20);  // as basic.json's own
  CHECK(str(doc["stats"]["source"]) == "trace");

  // In memory, in blocks of any size: the same events, or the same error.
  namespace trace = ferry::cli::trace;
  struct Case {
    std::string text;
    std::size_t events;  ///< read, when it is a trace
    std::string error;   ///< else
  };
  const std::vector<Case> cases = {
      {bom + "[\n{\"ph\":\"i\",\"ts\":1},\n{\"ph\":\"i\",\"ts\":2}\n]\n", 2, ""},
      {bom + "  [{\"ph\":\"i\"}]", 1, ""},
      {bom, 0, "not a trace file: it holds nothing but a byte order mark, and a trace starts with '['"},
      {"\xEF\xBB", 0, "not a trace file: it is \"\\xef\\xbb\", and a trace starts with '['"},
      {"\xEF\xBB[{\"ph\":\"i\"}]", 0, "not a trace file: it starts with \"\\xef\\xbb[{\"ph\":\"i\"}]\" where a trace starts with '['"},
      // Not at the start: not a mark, and no trace.
      {" " + bom + "[]", 0, "not a trace file: it starts with \"\\xef\\xbb\\xbf[]\" where a trace starts with '['"},
      {bom + bom + "[]", 0, "not a trace file: it starts with \"\\xef\\xbb\\xbf[]\" where a trace starts with '['"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    for (std::size_t block = 1; block <= c.text.size() + 1; ++block) {
      CAPTURE(block);
      trace::ReadResult result;
      std::size_t events = 0;
      const bool ok = trace::read_trace_text(c.text, [&](const auto&, std::size_t) { ++events; }, result, block);
      CHECK(ok == c.error.empty());
      CHECK(result.error == c.error);
      CHECK(events == c.events);
      if (ok) CHECK(result.closed);
    }
  }
}

TEST_CASE("Report.a_line_cut_short_in_the_middle_is_an_error_with_its_line_and_offset") {
  // Found by an exploratory run: a trace with one line cut short in the middle (a host that
  // crashed while writing it, a copy cut short) lost everything after that line, exit 0: the
  // unclosed string or object took in the lines after it as part of one event, which was then
  // "the last event ... dropped" (178,125 bytes, 249 of 1,000 calls reported). ferry writes one
  // event a line, so a line that ends inside its event is cut short: the last line of a killed
  // trace, dropped as before; any other is an error naming its line and where it ends.
  namespace trace = ferry::cli::trace;
  std::vector<std::string> lines = {"["};
  for (int i = 0; i < 12; ++i)
    lines.push_back(R"({"ph":"X","cat":"task","name":"square","pid":1,"tid":1,"ts":)" + std::to_string(10 * i) +
                    R"(,"dur":5,"args":{"call":)" + std::to_string(i) + R"(,"items":1}},)");
  const std::size_t cut_line = 6;  // 1-based: the sixth line of the file, the fifth event
  struct Cut {
    std::size_t bytes;  ///< what is left of the line
    std::string where;
  };
  const std::vector<Cut> cuts = {
      {3, "inside a key"},    {14, "inside a key"},    {23, "after a comma"},
      {29, "after a key"},    {30, "after a colon"},   {61, "inside a number"},
      {62, "after a number"}, {79, "after a brace"},   {85, "inside an inner key"},
      {97, "inside an inner object"}, {98, "before the last brace"},
  };
  auto text_of = [](const std::vector<std::string>& ls, const std::string& end) {
    std::string t;
    for (const auto& l : ls) t += l + "\n";
    return t + end;
  };
  for (const Cut& c : cuts) {
    CAPTURE(c.where);
    std::vector<std::string> ls = lines;
    REQUIRE(c.bytes < ls[cut_line - 1].size());
    ls[cut_line - 1].resize(c.bytes);
    std::size_t offset = 0;  // of the newline that ends the cut line
    for (std::size_t i = 0; i + 1 < cut_line; ++i) offset += ls[i].size() + 1;
    offset += c.bytes;
    for (const std::string& end : {std::string("]\n"), std::string()}) {
      const std::string text = text_of(ls, end);
      CAPTURE(text);
      for (std::size_t block : {std::size_t{1}, std::size_t{7}, trace::read_block_bytes}) {
        CAPTURE(block);
        trace::ReadResult result;
        std::size_t events = 0;
        CHECK_FALSE(trace::read_trace_text(text, [&](const auto&, std::size_t) { ++events; }, result, block));
        CHECK(result.error_line == cut_line);
        CHECK(result.error == "an event cut short at byte offset " + std::to_string(offset) +
                                  " (where its line ends), followed by more of the trace");
        CHECK(events == cut_line - 2);
      }
    }
    // The same cut on the last event line: dropped as a killed host's last line, as before,
    // whether a newline or the closing ']' follows it.
    std::vector<std::string> last(lines.begin(), lines.begin() + static_cast<std::ptrdiff_t>(cut_line));
    last.back().resize(c.bytes);
    for (const std::string& end : {std::string(), std::string("]\n"), std::string(",\n")}) {
      std::string text = text_of(last, end);
      CAPTURE(text);
      trace::ReadResult result;
      std::size_t events = 0;
      CHECK(trace::read_trace_text(text, [&](const auto&, std::size_t) { ++events; }, result));
      CHECK(result.error.empty());
      CHECK(events == cut_line - 2);
      CHECK(result.dropped_last);
      CHECK(result.dropped_line == cut_line);
      CHECK(result.dropped_bytes == c.bytes);
    }
  }
  // And from the command: exit status 2, the file, line and offset, no page.
  support::TempDir dir;
  std::vector<std::string> ls = lines;
  ls[cut_line - 1].resize(30);
  support::write_file(dir.path / "cut.json", text_of(ls, "]\n"));
  Ran r = report({(dir.path / "cut.json").string(), "-o", (dir.path / "r.html").string()}, dir.path);
  CHECK(r.status == 2);
  CHECK_MESSAGE(r.err.find("cut.json:6: an event cut short at byte offset ") != std::string::npos, r.err);
  CHECK(!fs::exists(dir.path / "r.html"));
}

TEST_CASE("Report.refuses_a_fifo_or_a_directory_without_waiting") {
  // The trace was opened with a blocking open(): a FIFO at its path, with no writer, hung
  // `ferry report` for ever. Only a regular file is read now; the rest is refused at once, by name.
  // (Without the fix this test blocks until ctest's TIMEOUT ends it: no sleep, no timing here.)
  support::TempDir dir;
  const fs::path out = dir.path / "r.html";
  const fs::path fifo = dir.path / "fifo.trace";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  fs::create_directory(dir.path / "dir.trace");
  // Each named in the message, as ferry report names a file it cannot read: "PATH: what".
  std::vector<std::pair<fs::path, std::string>> cases = {
      {fifo, "not a regular file (a FIFO)"},
      {dir.path / "dir.trace", "not a regular file (a directory)"},
  };
  for (const auto& [file, what] : cases) {
    CAPTURE(file.string());
    Ran r = report({file.string(), "-o", out.string()}, dir.path);
    CHECK(r.status == 2);
    CHECK(r.err == "ferry report: " + file.string() + ": " + what + "\n");
    CHECK(!fs::exists(out));
  }
  // The reader itself, in this process: the error has no line (it is about the file, not a line).
  namespace trace = ferry::cli::trace;
  trace::ReadResult result;
  bool any_event = false;
  CHECK_FALSE(trace::read_trace(fifo, [&](const auto&, std::size_t) { any_event = true; }, result));
  CHECK(result.error == "not a regular file (a FIFO)");
  CHECK(result.error_line == 0);
  CHECK_FALSE(any_event);
}

TEST_CASE("Report.an_error_quotes_the_same_bytes_wherever_the_blocks_end") {
  // Found by fuzz_trace: the message quotes 24 bytes from the one at fault, but only those of the
  // block being read, so a bad byte just before the end of a 1 MiB block was quoted cut short.
  namespace trace = ferry::cli::trace;
  const std::string bad = "xyz-not-an-event-and-more-text";
  const std::string quoted = bad.substr(0, 24) + "...";
  support::TempDir dir;
  const fs::path file = dir.path / "boundary.json";
  // '[' then spaces: the bad text starts 2 bytes before the end of the first block.
  support::write_file(file, "[" + std::string(trace::read_block_bytes - 3, ' ') + bad + "\n");
  Ran r = report({file.string(), "-o", (dir.path / "r.html").string()}, dir.path);
  CHECK(r.status == 2);
  CHECK_MESSAGE(r.err.find("boundary.json:1: expected an event object ('{') or the closing ']', found \"" + quoted +
                           "\"") != std::string::npos,
                r.err);
  // In memory, in blocks of any size: the same message, also at the very start and at the end.
  for (const std::string& text : {std::string("this is not a trace\n[1, 2, 3]\n"),
                                  std::string("[\n{\"ph\":\"i\"},\n") + bad, std::string("[ x")}) {
    CAPTURE(text);
    trace::ReadResult whole;
    CHECK_FALSE(trace::read_trace_text(text, [](const auto&, std::size_t) {}, whole));
    REQUIRE(!whole.error.empty());
    for (std::size_t block = 1; block <= text.size(); ++block) {
      CAPTURE(block);
      trace::ReadResult split;
      CHECK_FALSE(trace::read_trace_text(text, [](const auto&, std::size_t) {}, split, block));
      CHECK(split.error == whole.error);
      CHECK(split.error_line == whole.error_line);
    }
  }
}

TEST_CASE("Report.the_truncation_note_prints_no_control_characters") {
  // Caught by fuzz_trace's check of the notes (on an input made by hand; its runs did not reach
  // it): the `trace truncated` note (a bad one, printed to stderr) quoted the trace's max_bytes as
  // JSON text, which escapes only what is below 0x20: DEL and C1 controls (U+009B is CSI) reached
  // the terminal as they were.
  support::TempDir dir;
  const fs::path trace = dir.path / "truncated.json";
  write_trace(trace, {"{\"name\":\"trace truncated\",\"ph\":\"i\",\"s\":\"g\",\"ts\":1,\"pid\":1,\"tid\":0,"
                      "\"args\":{\"max_bytes\":\"\x7f\xc2\x9b" "31m\\u001b[2J\"}}"});
  Ran r = report({trace.string(), "-o", (dir.path / "t.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("The trace was truncated") != std::string::npos);
  INFO(r.err);
  // DEL and the C1 control are JSON escapes now (the ferry command's JSON is printable), each
  // backslash shown as \x5c.
  CHECK(r.err.find("(max_bytes \"\\x5cu007f\\x5cu009b31m\\x5cu001B[2J\")") != std::string::npos);
  for (std::size_t i = 0; i + 1 < r.err.size(); ++i) {  // the last byte is the newline
    CAPTURE(i);
    CHECK((r.err[i] >= 0x20 && r.err[i] < 0x7F));
  }
  // A number, as ferry writes it, is shown as it is.
  write_trace(trace, {R"({"name":"trace truncated","ph":"i","s":"g","ts":1,"pid":1,"tid":0,"args":{"max_bytes":16384}})"});
  r = report({trace.string(), "-o", (dir.path / "t.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("(max_bytes 16384)") != std::string::npos);
  // A write that failed (a full file system) says so instead.
  write_trace(trace, {R"({"name":"trace truncated","ph":"i","s":"g","ts":1,"pid":1,"tid":0,"args":{"error":"No space left on device"}})"});
  r = report({trace.string(), "-o", (dir.path / "t.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK_MESSAGE(r.err.find("a write of it failed (No space left on device)") != std::string::npos, r.err);
}

TEST_CASE("Report.task_table_counts_and_percentiles") {
  support::TempDir dir;
  // Without -o: the trace's name with .html.
  fs::copy_file(data_dir / "basic.json", dir.path / "basic.json");
  Ran r = report({(dir.path / "basic.json").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.empty());
  CHECK(r.out == (dir.path / "basic.html").string() + ": 20 calls on 3 workers (2 failed, 1 never ran)\n");
  json::Document doc;
  page_data(dir.path / "basic.html", doc);

  // Nearest rank: p50 of n values is the ceil(n/2)-th smallest, p90 the ceil(0.9 n)-th.
  const json::Value& add = task_row(doc, "add");  // 50 60 70 80 90(failed) 1000; waits 5 x5, 500
  CHECK(add["calls"].GetUint64() == 6);
  CHECK(add["items"].GetUint64() == 6);
  CHECK(add["p50"].GetDouble() == 70);
  CHECK(add["p90"].GetDouble() == 1000);
  CHECK(add["max"].GetDouble() == 1000);
  CHECK(add["wait_p50"].GetDouble() == 5);
  CHECK(add["wait_max"].GetDouble() == 500);
  CHECK(add["failed"].GetUint64() == 1);
  CHECK(add["never_ran"].GetUint64() == 0);
  const json::Value& slow = task_row(doc, "slow_sum");  // 2000..4500 by 500; one crashed, one cancelled
  CHECK(slow["calls"].GetUint64() == 6);
  CHECK(slow["p50"].GetDouble() == 3000);
  CHECK(slow["p90"].GetDouble() == 4500);
  CHECK(slow["wait_p50"].GetDouble() == 300);
  CHECK(slow["wait_max"].GetDouble() == 600);
  CHECK(slow["failed"].GetUint64() == 1);
  CHECK(slow["never_ran"].GetUint64() == 1);
  const json::Value& square = task_row(doc, "square");  // chunks of 10 items (the last 5): 100..800
  CHECK(square["calls"].GetUint64() == 8);
  CHECK(square["items"].GetUint64() == 75);
  CHECK(square["p50"].GetDouble() == 400);
  CHECK(square["p90"].GetDouble() == 800);
  CHECK(square["wait_p50"].GetDouble() == 40);
  CHECK(square["wait_max"].GetDouble() == 80);
  CHECK(square["failed"].GetUint64() == 0);

  // Utilisation: busy time (µs) over start to exit or crash.
  const auto& tracks = doc["tracks"];
  REQUIRE(tracks.Size() == 3);
  CHECK(str(tracks[0]["label"]) == "worker 5001");
  CHECK(tracks[0]["busy"].GetDouble() == 10810);
  CHECK(tracks[0]["life_begin"].GetDouble() == 1000);
  CHECK(tracks[0]["life_end"].GetDouble() == 17500);
  CHECK(str(tracks[1]["end_kind"]) == "crash");
  CHECK(str(tracks[1]["reason"]) == "signal 11 (SIGSEGV)");
  CHECK(tracks[1]["busy"].GetDouble() == 5640);
  CHECK(tracks[1]["life_end"].GetDouble() == 8200);
  CHECK(tracks[2]["busy"].GetDouble() == 8000);
  CHECK(str(tracks[2]["end_kind"]) == "exit");

  CHECK(str(doc["stats"]["source"]) == "trace");
  std::map<std::string, std::string> stats;  // each value as its JSON text
  for (const auto& row : doc["stats"]["rows"].GetArray()) stats[str(row[0])] = json_text(row[1]);
  CHECK(stats["submitted"] == "21");  // the trace's number, a number still
  CHECK(stats["failed_by_type.CancelledError"] == "1");
  CHECK(doc["failures_total"].GetUint64() == 3);
  CHECK(notes(doc).empty());  // a clean trace: nothing to warn about

  SUBCASE("--max-slices draws the first N by start time and says so") {
    Ran capped = report({(dir.path / "basic.json").string(), "--max-slices", "5", "-o",
                         (dir.path / "capped.html").string()}, dir.path);
    REQUIRE(capped.status == 0);
    json::Document c;
    page_data(dir.path / "capped.html", c);
    CHECK(c["slices"].Size() == 5);
    CHECK(c["slices_total"].GetUint64() == 20);
    CHECK(c["slices"][4][0].GetDouble() == 2600);  // starts 2000, 2000, 2200, 2300, 2600
    CHECK(task_row(c, "add")["calls"].GetUint64() == 6);  // the table still counts everything
    CHECK(any_contains(notes(c), "The task stream draws the first 5 of 20 calls (by start time)"));
  }
}

TEST_CASE("Report.hostile_names_are_text_not_markup") {
  support::TempDir dir;
  Ran r = report({(data_dir / "hostile.json").string(), "-o", (dir.path / "h.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  const std::string html = read_file(dir.path / "h.html");
  const std::string data = embedded_json(html);
  // Not one '<' of the trace reaches the page: the element holds the whole JSON, '<' escaped.
  CHECK(data.find('<') == std::string::npos);
  CHECK(data.find('>') == std::string::npos);
  CHECK(data.find("\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e") != std::string::npos);
  CHECK(count(html, "</script>") == 3);  // the page's own three script elements
  CHECK(html.find("<img") == std::string::npos);
  // The page's scripts carry the nonce its Content-Security-Policy allows, and only they do.
  std::smatch m;
  REQUIRE(std::regex_search(html, m, std::regex("script-src 'nonce-([0-9a-f]{32})'")));
  CHECK(count(html, "nonce=\"" + m[1].str() + "\"") == 3);  // the style, the error sink, the script

  // The JSON reads back to the same strings: escaped, not altered. Invalid UTF-8 became U+FFFD.
  json::Document doc;
  page_data(dir.path / "h.html", doc);
  std::vector<std::string> names;
  for (const auto& t : doc["tasks"].GetArray()) names.push_back(str(t["name"]));
  CHECK(std::find(names.begin(), names.end(), "</script><img src=x onerror=alert(1)>") != names.end());
  CHECK(any_contains(names, "bytes \xEF\xBF\xBD\xEF\xBF\xBD and "));
  CHECK(str(doc["tracks"][0]["label"]) == "rank 1 @ node-a (pid 777)");  // an MPI track
  CHECK(str(doc["tracks"][1]["label"]).find("<b>bold</b>") != std::string::npos);
  // NaN and Infinity are never numbers on the page (JSON.parse would refuse the whole data).
  CHECK(!std::regex_search(data, std::regex("[:,\\[]\\s*-?(NaN|Infinity)")));
  CHECK(data.find("\"NaN\"") != std::string::npos);  // the stats' uptime, as text
  // The X with ts NaN and the one without dur are skipped, and the page says so.
  CHECK(doc["slices_total"].GetUint64() == 3);
  CHECK(any_contains(notes(doc), "2 events without the fields their kind needs were skipped (the first on line 13)"));
}

TEST_CASE("Report.the_page_holds_no_del_or_c1_control_even_on_stdout") {
  // `-o -` writes the page to stdout, maybe a terminal: DEL and the C1 controls (U+009B is CSI)
  // from the trace's texts were written as they were. DEL is a JSON escape now (\u007f), which
  // JSON.parse reads back as the same character, and each C1 control the text \u0080...\u009f
  // (\\u009b in the JSON), as the bidirectional controls: the script shows it so; other characters
  // whose UTF-8 has C2 or 0x80-0x9F (U+00A0, U+00A3, U+00C2) stay as they are.
  support::TempDir dir;
  const std::string controls = "del \x7f csi \xC2\x9B nel \xC2\x85 first \xC2\x80 last \xC2\x9F";
  const std::string others = " nbsp \xC2\xA0 pound \xC2\xA3 a-circumflex \xC3\x82 ellipsis \xE2\x80\xA6 end \xC2";
  const std::string message = controls + others;  // ends in a lone C2: made U+FFFD by the summary
  const std::string kept =
      "del \x7f csi \\u009b nel \\u0085 first \\u0080 last \\u009f" + others.substr(0, others.size() - 1) + "\xEF\xBF\xBD";
  const std::string name = "task\x7f\xC2\x9B", label = "worker\xC2\x9B[2J", odd = "value\x7f\xC2\x9B";
  const std::string name_shown = "task\x7f\\u009b", label_shown = "worker\\u009b[2J", odd_shown = "value\x7f\\u009b";
  const fs::path trace = dir.path / "controls.json";
  write_trace(trace, {
      R"({"name":"ferry","ph":"M","ts":0,"pid":1,"tid":0,"args":{"host":)" + quoted(odd) + "}}",
      R"({"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":1,"args":{"name":)" + quoted(label) + "}}",
      R"({"name":)" + quoted(name) + R"(,"cat":"task","ph":"X","ts":10,"dur":5,"pid":1,"tid":1,)" +
          R"("args":{"call":1,"error":"TaskError","message":)" + quoted(message) + "}}",
      R"({"name":"stats","ph":"i","s":"g","ts":30,"pid":1,"tid":0,"args":{"submitted":1,"odd":)" + quoted(odd) +
          "}}",
  });
  REQUIRE(has_del_or_c1(read_file(trace)));
  Ran to_file = report({trace.string(), "-o", (dir.path / "c.html").string()}, dir.path);
  REQUIRE_MESSAGE(to_file.status == 0, to_file.err);
  Ran to_stdout = report({trace.string(), "-o", "-"}, dir.path);
  REQUIRE_MESSAGE(to_stdout.status == 0, to_stdout.err);
  CHECK(!has_del_or_c1(to_file.err + to_stdout.err));
  const std::string file_page = read_file(dir.path / "c.html");
  const std::string& stdout_page = to_stdout.out;
  for (const std::string* page : {&file_page, &stdout_page}) {
    CAPTURE(page == &file_page ? "to a file" : "to stdout");
    REQUIRE(page->rfind("<!DOCTYPE html>", 0) == 0);
    CHECK(!has_del_or_c1(*page));  // the whole page, template included
    const std::string data = embedded_json(*page);
    for (const char* escape : {"\\u007f", "\\\\u009b", "\\\\u0085", "\\\\u0080", "\\\\u009f"})
      CHECK_MESSAGE(data.find(escape) != std::string::npos, escape);
    CHECK(data.find("\xC2\xA0 pound \xC2\xA3 a-circumflex \xC3\x82") != std::string::npos);
    // The data reads back to the same texts, each C1 control as its text.
    json::Document doc;
    std::string error;
    REQUIRE_MESSAGE(ferry::detail::parse_json(data, doc, error), error);
    REQUIRE(doc["failures"].Size() == 1);
    CHECK(str(doc["strings"][doc["failures"][0][5].GetUint()]) == kept);
    CHECK(str(doc["tasks"][0]["name"]) == name_shown);
    CHECK(str(doc["tracks"][0]["label"]) == label_shown);
    CHECK(str(doc["failures"][0][3]) == label_shown);
    REQUIRE(doc["stats"]["rows"].Size() == 2);
    CHECK(str(doc["stats"]["rows"][1][1]) == odd_shown);  // a value kept as JSON text
    REQUIRE(doc["meta"].Size() == 1);
    CHECK(str(doc["meta"][0][1]) == odd_shown);
  }
  // The same page either way, but for its nonce.
  const std::regex nonce("[0-9a-f]{32}");
  CHECK(std::regex_replace(file_page, nonce, "N") == std::regex_replace(stdout_page, nonce, "N"));
}

TEST_CASE("Report.many_distinct_texts_and_ids_that_collide_in_std_hash_are_all_counted") {
  // The review's hash flooding: task names, messages and queue ids come from the trace, and were
  // keys of unordered maps; distinct strings that std::hash maps to one value (for every seed) made
  // each insertion scan all the others, O(n²) (32,768 such messages: 9 s instead of 0.25 s). The
  // maps are ordered now. Time is not asserted here: this checks that such strings, and ids up to
  // max_id_bytes, are each counted on their own, and that a longer id is skipped and counted.
  namespace trace = ferry::cli::trace;
  const std::vector<std::string> texts = colliding_strings(8);  // 256 strings of 128 bytes
  const std::vector<std::string> ids = colliding_strings(4);    // 16 ids of 64 bytes
  REQUIRE(texts.size() == 256);
  REQUIRE(std::set<std::string>(texts.begin(), texts.end()).size() == texts.size());
  REQUIRE(ids.size() == 16);
  REQUIRE(ids[0].size() == trace::max_id_bytes);
#if defined(__GLIBCXX__) && SIZE_MAX == UINT64_MAX
  // What makes them hostile (libstdc++'s 64-bit hash): one hash value for all.
  std::set<std::size_t> hashes;
  for (const auto& t : texts) hashes.insert(std::hash<std::string>{}(t));
  for (const auto& id : ids) hashes.insert(std::hash<std::string>{}(id));
  CHECK(hashes.size() == 2);  // one per length
#endif

  support::TempDir dir;
  const fs::path file = dir.path / "colliding.json";
  std::vector<std::string> events;
  // Each text a task name and a message: a call that never ran, one per call.
  for (std::size_t i = 0; i < texts.size(); ++i)
    events.push_back(R"({"name":"call ended","ph":"i","s":"t","ts":)" + std::to_string(i) + R"(,"pid":1,"tid":0,)" +
                     R"("args":{"call":)" + std::to_string(i) + R"(,"task":)" + quoted(texts[i]) +
                     R"(,"error":"TaskError","message":)" + quoted(texts[i]) + "}}");
  // 16 queue begins with string ids, 8 of them ended.
  for (std::size_t j = 0; j < ids.size(); ++j)
    events.push_back(R"({"name":"q","cat":"queue","ph":"b","id":)" + quoted(ids[j]) + R"(,"ts":)" +
                     std::to_string(1000 + j) + R"(,"pid":1,"tid":0})");
  for (std::size_t j = 0; j < 8; ++j)
    events.push_back(R"({"name":"q","cat":"queue","ph":"e","id":)" + quoted(ids[j]) + R"(,"ts":)" +
                     std::to_string(2000 + j) + R"(,"pid":1,"tid":0})");
  // An id one byte longer than max_id_bytes, begun and ended: both events skipped.
  const std::size_t first_long = events.size() + 2;  // its line: '[' is line 1
  for (const char* ph : {"b", "e"})
    events.push_back(R"({"name":"q","cat":"queue","ph":")" + std::string(ph) + R"(","id":)" + quoted(ids[8] + "x") +
                     R"(,"ts":3000,"pid":1,"tid":0})");
  write_trace(file, events);

  Ran r = report({file.string(), "-o", (dir.path / "c.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.out == (dir.path / "c.html").string() + ": 0 calls on 0 workers (0 failed, 256 never ran)\n");
  json::Document doc;
  page_data(dir.path / "c.html", doc);
  // Every name a task of its own, every message a string of its own.
  REQUIRE(doc["tasks"].Size() == texts.size());
  std::set<std::string> names;
  for (const auto& t : doc["tasks"].GetArray()) {
    names.insert(str(t["name"]));
    CHECK(t["never_ran"].GetUint64() == 1);
  }
  CHECK(names == std::set<std::string>(texts.begin(), texts.end()));
  CHECK(doc["failures_total"].GetUint64() == texts.size());
  REQUIRE(doc["failures"].Size() == texts.size());
  for (const auto& f : doc["failures"].GetArray()) {
    const std::string& text = texts[f[1].GetUint64()];  // by its call
    CHECK(str(doc["tasks"][f[2].GetUint()]["name"]) == text);
    CHECK(str(doc["strings"][f[5].GetUint()]) == text);
  }
  CHECK(doc["strings"].Size() == texts.size() + 1);  // and "TaskError"
  std::map<std::string, std::string> stats;
  for (const auto& row : doc["stats"]["rows"].GetArray()) stats[str(row[0])] = json_text(row[1]);
  CHECK(stats["submitted"] == "16");      // the begins with an id of at most 64 bytes
  CHECK(stats["queued_at_end"] == "8");   // each end matched its own begin
  CHECK(stats["never_ran"] == "256");
  CHECK(stats["failed_by_type.TaskError"] == "256");
  CHECK(any_contains(notes(doc), "2 events without the fields their kind needs were skipped (the first on line " +
                                     std::to_string(first_long) + ")"));
}

TEST_CASE("Report.huge_times_and_many_error_names_stay_bounded_json") {
  // Valid numbers whose sums overflow (1e308 + 1e308), and more distinct error names than a
  // table should hold, in a trace without a stats event (the rows are computed).
  support::TempDir dir;
  const fs::path trace = dir.path / "overflow.json";
  {
    std::ofstream out(trace);
    out << "[\n{\"name\":\"ferry\",\"ph\":\"M\",\"ts\":0,\"pid\":1,\"tid\":0,\"args\":{\"version\":1}},\n";
    out << "{\"name\":\"far\",\"cat\":\"task\",\"ph\":\"X\",\"ts\":1e308,\"dur\":1e308,\"pid\":1,\"tid\":1,"
           "\"args\":{\"call\":1}},\n";
    for (int i = 0; i < 700; ++i)
      out << "{\"name\":\"t\",\"cat\":\"task\",\"ph\":\"X\",\"ts\":" << 10 + i << ",\"dur\":1,\"pid\":1,\"tid\":1,"
          << "\"args\":{\"call\":" << 2 + i << ",\"error\":\"Error" << i << "\"}},\n";
    out << "]\n";
  }
  Ran r = report({trace.string(), "-o", (dir.path / "o.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  const std::string data = embedded_json(read_file(dir.path / "o.html"));
  CHECK(!std::regex_search(data, std::regex("[:,\\[]\\s*-?(NaN|Infinity)")));
  json::Document doc;
  page_data(dir.path / "o.html", doc);  // parses
  REQUIRE(str(doc["stats"]["source"]) == "computed");
  const auto& rows = doc["stats"]["rows"];
  // submitted, completed, failed; error types until the table holds 500 rows; then never_ran,
  // queued_at_end, workers_started, workers_crashed (no exit reasons: the rows are full).
  CHECK(rows.Size() == 500 + 4);
  bool has_never_ran = false;
  for (const auto& row : rows.GetArray()) has_never_ran = has_never_ran || str(row[0]) == "never_ran";
  CHECK(has_never_ran);  // the fixed rows come whatever the error names
}

TEST_CASE("Report.long_texts_are_cut_at_their_caps") {
  // Names, labels, reasons and stats keys and values are kept to 300 bytes, messages to 2000,
  // each then marked cut with "…": a trace of megabyte names makes no megabyte page.
  support::TempDir dir;
  const fs::path trace = dir.path / "long.json";
  write_trace(trace, {
      R"({"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":1,"args":{"name":")" + repeated(5000, 'L') + R"("}})",
      R"({"name":")" + repeated(5000, 'n') + R"(","cat":"task","ph":"X","ts":10,"dur":5,"pid":1,"tid":1,)" +
          R"("args":{"call":1,"items":1,"error":")" + repeated(5000, 'E') + R"(","message":")" +
          repeated(50000, 'm') + R"(","first_input":")" + repeated(5000, 'f') + R"("}})",
      R"({"name":"worker crash","ph":"i","s":"t","ts":20,"pid":1,"tid":1,"args":{"reason":")" +
          repeated(5000, 'r') + R"("}})",
      R"({"name":"stats","ph":"i","s":"g","ts":30,"pid":1,"tid":0,"args":{"submitted":1,")" + repeated(5000, 'k') +
          R"(":")" + repeated(5000, 'v') + R"("}})",
  });
  Ran r = report({trace.string(), "-o", (dir.path / "long.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  json::Document doc;
  page_data(dir.path / "long.html", doc);
  auto text = [&](const json::Value& index) { return str(doc["strings"][index.GetUint()]); };

  REQUIRE(doc["tasks"].Size() == 1);
  CHECK(str(doc["tasks"][0]["name"]) == cut(300, 'n'));
  REQUIRE(doc["tracks"].Size() == 1);
  CHECK(str(doc["tracks"][0]["label"]) == cut(300, 'L'));
  CHECK(str(doc["tracks"][0]["reason"]) == cut(300, 'r'));
  REQUIRE(doc["slices"].Size() == 1);
  const auto& slice = doc["slices"][0];  // [ts, dur, track, task, call, items, wait, arg_bytes,
                                         //  result_bytes, error, message, first_input]
  CHECK(text(slice[9]) == cut(300, 'E'));
  CHECK(text(slice[10]) == cut(2000, 'm'));
  CHECK(text(slice[11]) == cut(300, 'f'));
  REQUIRE(doc["marks"].Size() == 1);
  CHECK(text(doc["marks"][0][3]) == cut(300, 'r'));
  REQUIRE(doc["failures"].Size() == 1);
  CHECK(text(doc["failures"][0][5]) == cut(2000, 'm'));
  REQUIRE(str(doc["stats"]["source"]) == "trace");
  const auto& rows = doc["stats"]["rows"];
  REQUIRE(rows.Size() == 2);
  CHECK(str(rows[1][0]) == cut(300, 'k'));
  REQUIRE(rows[1][1].IsString());
  CHECK(str(rows[1][1]) == cut(300, 'v'));
}

TEST_CASE("Report.counter_series_stop_at_16") {
  // Every numeric member of a `C` event is a series: a hostile one with 40 adds 15 to "queued",
  // and the other 25 are left out.
  support::TempDir dir;
  const fs::path trace = dir.path / "series.json";
  std::string wide;
  for (int k = 0; k < 40; ++k) wide += (k ? "," : "") + std::string("\"s") + std::to_string(k) + "\":" + std::to_string(k);
  write_trace(trace, {R"({"name":"pool","ph":"C","ts":10,"pid":1,"tid":0,"args":{"queued":3}})",
                      R"({"name":"wide","ph":"C","ts":20,"pid":1,"tid":0,"args":{)" + wide + "}}",
                      R"({"name":"pool","ph":"C","ts":30,"pid":1,"tid":0,"args":{"queued":4,"s99":1}})"});
  Ran r = report({trace.string(), "-o", (dir.path / "series.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  json::Document doc;
  page_data(dir.path / "series.html", doc);
  const auto& counters = doc["counters"];
  CHECK(counters["events"].GetUint64() == 3);
  std::vector<std::string> names;
  for (const auto& n : counters["names"].GetArray()) names.push_back(str(n));
  REQUIRE(names.size() == 16);
  CHECK(names.front() == "queued");
  CHECK(names[1] == "wide.s0");
  CHECK(names.back() == "wide.s14");
  // Each point: its time, then one value per kept series.
  REQUIRE(counters["points"].Size() == 3);
  for (const auto& point : counters["points"].GetArray()) CHECK(point.Size() == 1 + 16);
  CHECK(counters["points"][2][1].GetDouble() == 4);
  CHECK(counters["points"][2][16].GetDouble() == 14);  // wide.s14, as the event at 20 set it
  CHECK_FALSE(counters["reduced"].GetBool());
}

TEST_CASE("Report.counter_points_stay_within_their_cap") {
  // More than 4000 points of the pool's counters are reduced to at most 4000 time buckets, each
  // keeping the maximum of each series, so that a peak stays visible.
  support::TempDir dir;
  const fs::path trace = dir.path / "points.json";
  std::vector<std::string> events;
  add_pool_counter_points(events);
  write_trace(trace, events);
  Ran r = report({trace.string(), "-o", (dir.path / "points.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  json::Document doc;
  page_data(dir.path / "points.html", doc);
  const auto& counters = doc["counters"];
  CHECK(counters["events"].GetUint64() == 5000);
  CHECK(counters["reduced"].GetBool());
  const auto& points = counters["points"];
  // 4000 buckets over the 4999 µs the points span: each holds one or two points 1 µs apart.
  CHECK(points.Size() == 4000);
  double peak = 0;
  for (const auto& p : points.GetArray()) peak = std::max(peak, p[1].GetDouble());
  CHECK(peak == 999);
}

TEST_CASE("Report.counter_points_stay_within_their_cap_when_the_trace_span_overflows") {
  // A slice ending past the largest double (1e308 + 1e308) beside the counters: the buckets are
  // the counters' own, so the reduction holds (an infinite width once made every bucket time NaN,
  // written as null, and kept every point).
  support::TempDir dir;
  const fs::path trace = dir.path / "far.json";
  std::vector<std::string> events = {
      R"({"name":"far","cat":"task","ph":"X","ts":1e308,"dur":1e308,"pid":1,"tid":1,"args":{"call":1}})"};
  add_pool_counter_points(events);
  write_trace(trace, events);
  Ran r = report({trace.string(), "-o", (dir.path / "far.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  json::Document doc;
  page_data(dir.path / "far.html", doc);
  const auto& points = doc["counters"]["points"];
  CHECK(points.Size() == 4000);
  bool all_times = true;
  double peak = 0;
  for (const auto& p : points.GetArray()) {
    all_times = all_times && p[0].IsNumber();
    peak = std::max(peak, p[1].GetDouble());
  }
  CHECK(all_times);
  CHECK(peak == 999);
}

TEST_CASE("Report.stats_and_header_rows_stop_at_500") {
  // A stats event or a `ferry` header with more members than a table should hold: rows stop at
  // 500, whether the members are plain or one level down.
  support::TempDir dir;
  std::string plain, nested;
  for (int k = 0; k < 800; ++k) {
    plain += (k ? "," : "") + std::string("\"p") + std::to_string(k) + "\":" + std::to_string(k);
    nested += (k ? "," : "") + std::string("\"Error") + std::to_string(k) + "\":1";
  }
  struct Case {
    std::string name;
    std::string header_args, stats_args;
  };
  for (const Case& c : {Case{"plain", plain, plain}, Case{"nested", "\"by\":{" + nested + "}",
                                                           "\"submitted\":1,\"failed_by_type\":{" + nested + "}"}}) {
    CAPTURE(c.name);
    const fs::path trace = dir.path / (c.name + ".json");
    write_trace(trace, {R"({"name":"ferry","ph":"M","ts":0,"pid":1,"tid":0,"args":{)" + c.header_args + "}}",
                        R"({"name":"stats","ph":"i","s":"g","ts":30,"pid":1,"tid":0,"args":{)" + c.stats_args + "}}"});
    const fs::path page = dir.path / (c.name + ".html");
    Ran r = report({trace.string(), "-o", page.string()}, dir.path);
    REQUIRE_MESSAGE(r.status == 0, r.err);
    json::Document doc;
    page_data(page, doc);
    REQUIRE(str(doc["stats"]["source"]) == "trace");
    CHECK(doc["stats"]["rows"].Size() == 500);
    CHECK(doc["meta"].Size() == 500);
    // The rows kept are the first ones, in the trace's order.
    const auto& last = doc["stats"]["rows"][499];
    CHECK(str(last[0]) == (c.name == "plain" ? "p499" : "failed_by_type.Error498"));
  }
}

TEST_CASE("Report.tracks_marks_and_failures_past_their_caps_are_counted_not_drawn") {
  // The page draws at most 2000 worker tracks, 100,000 marks and lists 1000 failures; the tables
  // and the totals count everything, and the page says what it left out.
  support::TempDir dir;
  const fs::path trace = dir.path / "many.json";
  std::vector<std::string> events;
  for (int tid = 1; tid <= 2100; ++tid) {  // a track each, with one call
    const std::string t = std::to_string(tid);
    events.push_back(R"({"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":)" + t + R"(,"args":{"name":"worker )" + t + "\"}}");
    events.push_back(R"({"name":"add","cat":"task","ph":"X","ts":)" + t + R"(,"dur":1,"pid":1,"tid":)" + t +
                     R"(,"args":{"call":)" + t + "}}");
  }
  for (int i = 0; i < 100'100; ++i)  // marks, on track 1
    events.push_back(R"({"name":"worker start","ph":"i","s":"t","ts":)" + std::to_string(3000 + i) +
                     R"(,"pid":1,"tid":1,"args":{"pid":5}})");
  for (int i = 0; i < 1200; ++i)  // calls that never ran
    events.push_back(R"({"name":"call ended","ph":"i","s":"t","ts":)" + std::to_string(200'000 + i) +
                     R"(,"pid":1,"tid":0,"args":{"call":)" + std::to_string(10'000 + i) +
                     R"(,"task":"add","error":"CancelledError","message":"m"}})");
  events.push_back(R"({"name":"stats","ph":"i","s":"g","ts":300000,"pid":1,"tid":0,"args":{"submitted":3300}})");
  write_trace(trace, events);
  Ran r = report({trace.string(), "-o", (dir.path / "many.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.out == (dir.path / "many.html").string() + ": 2100 calls on 2100 workers (0 failed, 1200 never ran)\n");
  json::Document doc;
  page_data(dir.path / "many.html", doc);
  CHECK(doc["tracks"].Size() == 2000);
  CHECK(doc["tracks_total"].GetUint64() == 2100);
  CHECK(str(doc["tracks"][1999]["label"]) == "worker 2000");
  CHECK(doc["slices"].Size() == 2000);  // the calls of the tracks drawn
  CHECK(doc["slices_total"].GetUint64() == 2100);
  CHECK(task_row(doc, "add")["calls"].GetUint64() == 2100);
  CHECK(task_row(doc, "add")["never_ran"].GetUint64() == 1200);
  CHECK(doc["marks"].Size() == 100'000);
  CHECK(doc["failures"].Size() == 1000);
  CHECK(doc["failures_total"].GetUint64() == 1200);
  CHECK(any_contains(notes(doc), "The task stream draws the first 2,000 of 2,100 workers; the tables count everything."));
}

namespace {

namespace trace = ferry::cli::trace;

/// A summary of `text` (a trace) under `limits`, as `ferry report` makes it.
trace::Summary summarize(const std::string& text, trace::SummaryLimits limits = {}) {
  trace::SummaryBuilder builder(limits);
  trace::ReadResult read;
  REQUIRE(trace::read_trace_text(text, [&](const json::Value& e, std::size_t line) { builder.add(e, line); }, read));
  return builder.finish();
}

/// The page's data of `summary` drawn under `limits`, parsed; its notes in `notes_out`.
void page_of(const trace::Summary& summary, const trace::ReportLimits& limits, json::Document& doc) {
  trace::ReadResult read;
  read.closed = true;
  const trace::Page page(summary, limits);
  const std::vector<trace::Note> notes = trace::report_notes(read, page);
  char* buffer = nullptr;
  std::size_t size = 0;
  std::FILE* f = ::open_memstream(&buffer, &size);
  REQUIRE(f != nullptr);
  const bool ok = trace::write_report_html(f, "t.trace", "ferry test", page, notes);
  REQUIRE(std::fclose(f) == 0);
  const std::string html(buffer, size);
  std::free(buffer);
  REQUIRE(ok);
  std::string error;
  REQUIRE_MESSAGE(ferry::detail::parse_json(embedded_json(html), doc, error), error);
}

std::string trace_text(const std::vector<std::string>& events) {
  std::string out = "[\n";
  for (const auto& e : events) out += e + ",\n";
  return out + "]\n";
}

}  // namespace

TEST_CASE("Report.a_trace_of_many_distinct_tracks_keeps_only_what_the_page_draws") {
  // The page draws the 2,000 lowest worker numbers (tracks by tid), their marks and calls, and
  // lists the first 1,000 failures. The summary kept every track, mark and text of the trace until
  // the page was written: a crafted trace cost 5-10 times its size. 6,000 workers here, each
  // named (250 bytes), started and crashed (reasons of 250 bytes), with one call; every 1000th
  // fails with a message of its own. Only the first 2,000 workers' records and texts stay; the
  // totals still count all, and a failure of a worker not drawn is listed under its name.
  const int n = 6000;
  const std::string pad(240, 'p');
  std::vector<std::string> events;
  for (int tid = 1; tid <= n; ++tid) {
    const std::string t = std::to_string(tid);
    events.push_back(R"({"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":)" + t + R"(,"args":{"name":"worker )" + t +
                     " " + pad + "\"}}");
    events.push_back(R"({"name":"worker start","ph":"i","s":"t","ts":)" + t + R"(,"pid":1,"tid":)" + t +
                     R"(,"args":{"reason":"r)" + t + pad + "\"}}");
    events.push_back(R"({"name":"add","cat":"task","ph":"X","ts":)" + t + R"(,"dur":1,"pid":1,"tid":)" + t +
                     R"(,"args":{"call":)" + t +
                     (tid % 1000 == 0 ? R"(,"error":"TaskError","message":"m)" + t + std::string(1000, 'm') + "\"" : "") +
                     "}}");
    events.push_back(R"({"name":"worker crash","ph":"i","s":"t","ts":)" + std::to_string(tid + 1) +
                     R"(,"pid":1,"tid":)" + t + R"(,"args":{"reason":"c)" + t + pad + R"(","error":"e)" + t + pad +
                     "\"}}");
  }
  const trace::Summary s = summarize(trace_text(events));
  CHECK(s.tracks.size() == 2000);
  CHECK(s.tracks.back().label == "worker 2000 " + pad);
  CHECK(s.slices.size() == 2000);   // the calls of the tracks drawn
  CHECK(s.marks.size() == 4000);    // their starts and crashes
  // Their marks' reasons and errors (3 a worker), the error type and the 6 failures' messages.
  CHECK(s.strings.strings().size() <= 3 * 2000 + 1 + 6 + 4);
  std::size_t kept_bytes = 0;
  for (const auto& text : s.strings.strings()) kept_bytes += text.size();
  CHECK(kept_bytes < 2000 * 3 * 260 + 6 * 1100 + 4 * 300);

  json::Document doc;
  page_of(s, {}, doc);
  CHECK(doc["tracks"].Size() == 2000);
  CHECK(doc["tracks_total"].GetUint64() == n);
  CHECK(doc["slices"].Size() == 2000);
  CHECK(doc["slices_total"].GetUint64() == n);
  CHECK(doc["marks"].Size() == 4000);
  CHECK(task_row(doc, "add")["calls"].GetUint64() == n);
  CHECK(task_row(doc, "add")["failed"].GetUint64() == n / 1000);
  REQUIRE(doc["failures"].Size() == n / 1000);
  CHECK(doc["failures_total"].GetUint64() == n / 1000);
  for (std::size_t i = 0; i < doc["failures"].Size(); ++i) {
    const auto& f = doc["failures"][static_cast<json::SizeType>(i)];
    const std::string t = std::to_string(1000 * (i + 1));
    CHECK(f[1].GetInt64() == 1000 * static_cast<std::int64_t>(i + 1));
    CHECK(str(f[3]) == "worker " + t + " " + pad);  // drawn or not, under its name
    CHECK(str(doc["strings"][f[5].GetUint()]) == "m" + t + std::string(1000, 'm'));
  }
  std::map<std::string, std::string> stats;
  for (const auto& row : doc["stats"]["rows"].GetArray()) stats[str(row[0])] = json_text(row[1]);
  CHECK(stats["workers_started"] == std::to_string(n));
  CHECK(stats["workers_crashed"] == std::to_string(n));
  CHECK(stats["failed_by_type.TaskError"] == std::to_string(n / 1000));
  CHECK(stats["completed"] == std::to_string(n - n / 1000));
  CHECK(any_contains(notes(doc), "The task stream draws the first 2,000 of 6,000 workers; the tables count everything."));
}

TEST_CASE("Report.queue_waits_are_matched_by_call_number_whatever_the_id_form") {
  // Waits are kept by call number (16 bytes a call): an id that is the call as a number, as a
  // decimal string or as "0x..." hex matches it; of an id's several `e`, the last wins; an id that
  // is no call's number ("007", "x", negative) matches none.
  auto queued = [](const std::string& id, int b, int e) {
    return std::vector<std::string>{R"({"name":"q","cat":"queue","ph":"b","ts":)" + std::to_string(b) + R"(,"id":)" + id + "}",
                                    R"({"name":"q","cat":"queue","ph":"e","ts":)" + std::to_string(e) + R"(,"id":)" + id + "}"};
  };
  std::vector<std::string> events;
  for (const auto& part : {queued("1", 0, 1), queued("\"2\"", 0, 2), queued("\"0x3\"", 0, 3), queued("4", 0, 4),
                           queued("4", 10, 15), queued("\"005\"", 0, 5), queued("\"x\"", 0, 6), queued("-7", 0, 7)})
    events.insert(events.end(), part.begin(), part.end());
  for (int call : {1, 2, 3, 4, 5, 7})
    events.push_back(R"({"name":"t","ph":"X","ts":20,"dur":1,"tid":1,"args":{"call":)" + std::to_string(call) + "}}");
  const trace::Summary s = summarize(trace_text(events));
  REQUIRE(s.slices.size() == 6);
  std::map<std::int64_t, double> wait;
  for (const trace::Slice& sl : s.slices) wait[sl.call] = sl.wait;
  CHECK(wait == std::map<std::int64_t, double>{{1, 1}, {2, 2}, {3, 3}, {4, 5}, {5, -1}, {7, -1}});
  REQUIRE(s.tasks.size() == 1);
  CHECK(s.tasks[0].waits == std::vector<double>{1, 2, 3, 5});
}

TEST_CASE("Report.a_failed_call_on_a_negative_tid_ran_on_that_worker") {
  // Any integer tid is a worker's track. A failed slice on tid -5 is a call that ran on it: it
  // lists that worker and sorts after a `call ended` of the same time, whether its track is drawn,
  // left out, or replaced later by a lower tid.
  const std::string text = trace_text({
      R"({"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":-5,"args":{"name":"minus five"}})",
      R"({"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":-2,"args":{"name":"minus two"}})",
      R"({"name":"t","ph":"X","ts":10,"dur":1,"pid":1,"tid":-5,"args":{"call":1,"error":"E","message":"m1"}})",
      R"({"name":"t","ph":"X","ts":10,"dur":1,"pid":1,"tid":-2,"args":{"call":2,"error":"E","message":"m2"}})",
      R"({"name":"call ended","ph":"i","s":"t","ts":10,"pid":1,"tid":0,"args":{"call":3,"task":"t","error":"C"}})",
      R"({"name":"t","ph":"X","ts":11,"dur":1,"pid":1,"tid":-9,"args":{"call":4}})"});
  for (const std::size_t max_tracks : {std::size_t{2'000}, std::size_t{1}}) {
    CAPTURE(max_tracks);
    // With one track: -5 is kept when its failure is read, then -9 replaces it; -2 is never kept.
    const trace::ReportLimits limits{.max_tracks = max_tracks};
    const trace::Summary s = summarize(text, trace::summary_limits(limits));
    REQUIRE(s.failures.size() == 3);
    CHECK(s.failures[0].call == 3);
    CHECK(s.failures[0].track == -1);
    CHECK(s.failures[0].track_label == -1);
    auto worker = [&](const trace::Failure& f) {
      if (f.track >= 0) return s.tracks[static_cast<std::size_t>(f.track)].label;
      return f.track_label >= 0 ? s.strings.strings()[static_cast<std::size_t>(f.track_label)] : std::string("(none)");
    };
    CHECK(s.failures[1].call == 1);
    CHECK(worker(s.failures[1]) == "minus five");
    CHECK(s.failures[2].call == 2);
    CHECK(worker(s.failures[2]) == "minus two");
    if (max_tracks > 2) {
      CHECK(s.failures[1].track >= 0);
      CHECK(s.failures[2].track >= 0);
    }
    json::Document doc;
    page_of(s, limits, doc);
    const auto& failures = doc["failures"];
    REQUIRE(failures.Size() == 3);
    CHECK(failures[0][3].IsNull());
    CHECK(str(failures[1][3]) == "minus five");
    CHECK(str(failures[2][3]) == "minus two");
    CHECK(task_row(doc, "t")["never_ran"].GetUint64() == 1);
  }
}

namespace {

/// A random trace's events for the capped summaries' tests: tids in any order (negative too),
/// times in any order, calls with queue waits, some failed, worker marks, calls that never ran.
std::vector<std::string> random_events(std::mt19937& random) {
  const int tids = 2 + static_cast<int>(random() % 12);
  std::vector<std::string> events;
  const int n = 20 + static_cast<int>(random() % 200);
  for (int i = 0; i < n; ++i) {
    const std::string tid = std::to_string(static_cast<int>(random() % tids) - 3);
    const std::string ts = std::to_string(random() % 100);
    switch (random() % 5) {
      case 0:
      case 1:
        events.push_back(R"({"name":"b","cat":"queue","ph":"b","id":)" + std::to_string(i) + R"(,"ts":)" + ts + "}");
        events.push_back(R"({"name":"b","cat":"queue","ph":"e","id":)" + std::to_string(i) + R"(,"ts":)" +
                         std::to_string(100 + random() % 5) + "}");
        events.push_back(R"({"name":"t)" + std::to_string(random() % 3) + R"(","ph":"X","ts":)" + ts +
                         R"(,"dur":)" + std::to_string(random() % 10) + R"(,"tid":)" + tid + R"(,"args":{"call":)" +
                         std::to_string(i) + (random() % 4 == 0 ? R"(,"error":"E)" + std::to_string(random() % 3) +
                                                                      R"(","message":"m)" + std::to_string(i) + "\""
                                                                : "") +
                         "}}");
        break;
      case 2:
        events.push_back(R"({"name":"worker start","ph":"i","ts":)" + ts + R"(,"tid":)" + tid +
                         R"(,"args":{"reason":"r)" + std::to_string(i) + "\"}}");
        break;
      case 3:
        events.push_back(std::string(R"({"name":")") + (random() % 2 ? "worker exit" : "worker crash") +
                         R"(","ph":"i","ts":)" + ts + R"(,"tid":)" + tid + R"(,"args":{"reason":"x)" +
                         std::to_string(random() % 4) + R"(","error":"y)" + std::to_string(i) + "\"}}");
        break;
      default:
        events.push_back(R"({"name":"call ended","ph":"i","ts":)" + ts + R"(,"args":{"call":)" + std::to_string(i) +
                         R"(,"task":"t1","error":"C","message":"n)" + std::to_string(i) + "\"}}");
    }
  }
  return events;
}

}  // namespace

TEST_CASE("Report.what_a_capped_summary_keeps_draws_the_same_page_as_keeping_everything") {
  // The summary keeps only what a page of the same caps can draw: the lowest tids (a lower one
  // replaces the highest), of their calls and marks at most twice the cap, cut to the first by
  // time. Random traces (tids in any order, times in any order, failures, queue waits) summarized
  // under small caps draw the page the summary that keeps everything draws under those caps, but
  // for the notes; when a cut was undone by a lower tid coming later, the page says it may miss
  // some, and otherwise it is exact. Tids may be negative: the format does not forbid it, and a
  // failed slice of one is still a call that ran on that worker.
  std::mt19937 random(7);
  std::size_t partial = 0, exact = 0;
  for (int round = 0; round < 300; ++round) {
    CAPTURE(round);
    const std::vector<std::string> events = random_events(random);
    const std::string text = trace_text(events);
    const trace::ReportLimits limits{.max_slices = 1 + random() % 6, .max_tracks = 1 + random() % 4,
                                     .max_marks = 1 + random() % 6, .max_failures = 1 + random() % 4};
    const trace::Summary capped = summarize(text, trace::summary_limits(limits));
    const trace::Summary full = summarize(text);
    CHECK(capped.tracks.size() <= limits.max_tracks);
    CHECK(capped.slices.size() < 2 * limits.max_slices);
    CHECK(capped.marks.size() < 2 * limits.max_marks);
    CHECK(capped.failures.size() < 4 * limits.max_failures);
    json::Document a, b;
    page_of(capped, limits, a);
    page_of(full, limits, b);
    a.RemoveMember("notes");
    b.RemoveMember("notes");
    if (capped.slices_partial || capped.marks_partial) {
      ++partial;
      json::Document with_notes;
      page_of(capped, limits, with_notes);
      CHECK(any_contains(notes(with_notes), "The task stream may miss some of the first"));
      // All but the slices and marks (the cut may have taken some), the strings they number and
      // the failures that refer to those numbers.
      for (const char* member : {"slices", "marks", "strings", "failures"}) {
        a.RemoveMember(member);
        b.RemoveMember(member);
      }
    } else {
      ++exact;
    }
    CHECK(json_text(a) == json_text(b));
  }
  CHECK(exact > 100);
  CHECK(partial > 0);
}

TEST_CASE("Report.a_summary_that_lets_texts_go_draws_the_same_page_or_says_what_it_left_out") {
  // The summary lets go of the texts the page would not show (SummaryLimits::max_text_bytes),
  // looking often here (text_check_bytes 0: each quarter of a budget of 0 to 80 bytes). On random
  // traces (not in time order), the page is the one of a summary that kept every text, but that a
  // call or mark may show "(left out ...)" where that one shows its text, or its text where that
  // one left it out (a text let go early makes room for a later one): never another text, and the
  // failures listed keep theirs. Most pages are the same byte for byte.
  std::mt19937 random(11);
  std::size_t let_go = 0, exact = 0, compared = 0;
  for (int round = 0; round < 300; ++round) {
    CAPTURE(round);
    const std::string text = trace_text(random_events(random));
    const trace::ReportLimits limits{.max_slices = 1 + random() % 20, .max_tracks = 1 + random() % 6,
                                     .max_marks = 1 + random() % 20, .max_failures = 1 + random() % 3,
                                     .max_text_bytes = random() % 80};
    trace::SummaryLimits summary_limits = trace::summary_limits(limits);
    summary_limits.text_check_bytes = 0;
    const trace::Summary capped = summarize(text, summary_limits);
    const trace::Summary full = summarize(text);
    REQUIRE(full.strings.let_go_count() == 0);
    if (capped.strings.let_go_count() != 0) ++let_go;
    if (capped.slices_partial || capped.marks_partial) continue;  // the cuts' own case, above
    ++compared;
    json::Document a, b, every_text;
    page_of(capped, limits, a);
    page_of(full, limits, b);
    trace::ReportLimits no_text_limit = limits;
    no_text_limit.max_text_bytes = SIZE_MAX;
    page_of(full, no_text_limit, every_text);
    const std::string a_text = json_text(a), b_text = json_text(b);
    if (a_text == b_text) {
      ++exact;
      continue;
    }
    auto string_of = [](const json::Document& doc, const json::Value& i) {
      return i.IsNull() ? std::string("\x01none") : str(doc["strings"][i.GetUint()]);
    };
    // Each text of a row: its own (as a page without a text limit shows it), or "(left out ...)".
    auto own_or_left_out = [&](const char* rows, unsigned i, std::initializer_list<unsigned> texts) {
      const json::Value& x = a[rows][i];
      const json::Value& y = b[rows][i];
      const json::Value& z = every_text[rows][i];
      REQUIRE(x.Size() == y.Size());
      for (unsigned k = 0; k < x.Size(); ++k) {
        if (std::find(texts.begin(), texts.end(), k) == texts.end()) {
          CHECK(json_text(x[k]) == json_text(y[k]));
          continue;
        }
        const std::string shown = string_of(a, x[k]), own = string_of(every_text, z[k]);
        CHECK_MESSAGE((shown == own || shown.starts_with("(left out: ")), shown << " for " << own);
      }
    };
    for (const char* rows : {"slices", "marks", "failures"}) REQUIRE(a[rows].Size() == b[rows].Size());
    for (unsigned i = 0; i < a["slices"].Size(); ++i) own_or_left_out("slices", i, {9, 10, 11});
    for (unsigned i = 0; i < a["marks"].Size(); ++i) own_or_left_out("marks", i, {3, 4});
    for (unsigned i = 0; i < a["failures"].Size(); ++i) {
      const auto& x = a["failures"][i];
      const auto& y = b["failures"][i];
      for (unsigned k : {4u, 5u, 6u}) CHECK(string_of(a, x[k]) == string_of(b, y[k]));
    }
    for (const char* member : {"slices", "marks", "failures", "strings", "notes"}) {
      a.RemoveMember(member);
      b.RemoveMember(member);
    }
    CHECK(json_text(a) == json_text(b));
  }
  MESSAGE(let_go << " rounds let texts go; " << exact << " of " << compared << " pages the same");
  CHECK(let_go > 100);
  CHECK(exact * 10 > compared * 8);
}

TEST_CASE("Report.memory_of_a_trace_of_distinct_tracks_stays_a_fraction_of_its_size") {
  // `ferry report` run on 40 MB of one-call workers, each its own tid (the review's crafted trace:
  // 68 MB of distinct tracks took 710 MB). Now it keeps 2,000 tracks, and per call only its
  // duration (for the percentiles) and per worker its number (8 bytes, for the total): its peak
  // resident size, measured by getrusage(RUSAGE_CHILDREN) after it ends, stays under half the
  // trace's size plus the program's own (it was about 9 times the size). Not under the sanitizers,
  // whose shadow memory and quarantine are no measure of what the program keeps.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under a sanitizer");
  return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
  MESSAGE("skipped under a sanitizer");
  return;
#endif
#endif
  support::TempDir dir;
  const fs::path file = dir.path / "tracks.json";
  {
    std::ofstream out(file, std::ios::binary);
    out << "[\n";
    std::string line;
    for (int tid = 1; tid <= 700'000; ++tid) {
      const std::string t = std::to_string(tid);
      line = R"({"ph":"X","name":"a","ts":)" + t + R"(,"dur":0,"tid":)" + t + "},\n";
      out << line;
    }
    out << "]\n";
  }
  const auto size = fs::file_size(file);
  REQUIRE(size > 35'000'000);
  Ran r = report({file.string(), "-o", (dir.path / "t.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.out == (dir.path / "t.html").string() + ": 700000 calls on 700000 workers (0 failed, 0 never ran)\n");
  rusage usage{};
  REQUIRE(::getrusage(RUSAGE_CHILDREN, &usage) == 0);
  const auto peak = static_cast<std::uintmax_t>(usage.ru_maxrss) * 1024;  // KiB on Linux
  CHECK_MESSAGE(peak < size / 2 + (std::uintmax_t{32} << 20),
                "peak " << peak / 1024 / 1024 << " MiB for a trace of " << size / 1024 / 1024 << " MiB");
}

TEST_CASE("Report.renders_every_task_in_headless_chromium") {
  // Debian's chromium: `make test` installs it (make report-deps).
  std::string chromium;
  support::TempDir which_dir;
  for (const char* candidate : {"chromium", "chromium-browser"}) {
    Ran which = run({"sh", "-c", std::string("command -v ") + candidate}, which_dir.path);
    if (which.status == 0) {
      chromium = which.out.substr(0, which.out.find('\n'));
      break;
    }
  }
  REQUIRE_MESSAGE(!chromium.empty(),
                  "chromium is not installed: this test opens the report in headless Chromium. "
                  "`make test` installs it (make report-deps), or: apt-get install --no-install-recommends chromium");

  // A known run of the real executor: 6 lines, one call each, on 2 workers that start and, at
  // the end, exit.
  support::TempDir run_dir;
  const fs::path known = run_dir.path / "known.trace";
  {
    std::ofstream(run_dir.path / "in.jsonl") << "1\n2\n3\n4\n5\n6\n";
    Ran m = run({FERRY_TEST_CLI, "--plugin-dir", FERRY_TEST_PLUGIN_DIR, "map", "-j", "2", "--chunksize", "1",
                 "--no-progress", "--trace", known.string(), "math:square", (run_dir.path / "in.jsonl").string()},
                run_dir.path);
    REQUIRE_MESSAGE(m.status == 0, m.err);
    REQUIRE(m.out == "1\n4\n9\n16\n25\n36\n");
  }

  // 2,010 calls of as many task names: the tasks table lists 2,000, then "other task names",
  // whose calls are drawn in its colour.
  const fs::path names = run_dir.path / "names.trace";
  {
    std::vector<std::string> events;
    for (int i = 0; i < 2010; ++i)
      events.push_back(R"({"name":"task )" + std::to_string(10000 + i) + R"(","cat":"task","ph":"X","ts":)" +
                       std::to_string(10 * i) + R"(,"dur":5,"pid":1,"tid":1,"args":{"call":)" + std::to_string(i) + "}}");
    write_trace(names, events);
  }

  struct Case {
    std::string trace;
    std::size_t slices, failed, starts, exits, crashes;
  };
  for (const Case& c : {Case{"basic.json", 20, 2, 3, 2, 1}, Case{"hostile.json", 3, 1, 2, 0, 1},
                        Case{known.string(), 6, 0, 2, 2, 0}, Case{names.string(), 2010, 0, 0, 0, 0}}) {
    CAPTURE(c.trace);
    support::TempDir dir;
    const fs::path page = dir.path / "report.html";
    Ran r = report({(data_dir / c.trace).string(), "-o", page.string()}, dir.path);  // an absolute path stays itself
    REQUIRE_MESSAGE(r.status == 0, r.err);
    // A profile and a HOME of its own: runs in parallel do not share a profile lock, and nothing
    // is written to the real home. Chromium's stderr (dbus, gpu) is noise: only the page counts.
    const std::vector<std::string> browser = {chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                              "--no-first-run", "--user-data-dir=" + (dir.path / "profile").string(),
                                              "--virtual-time-budget=5000", "--window-size=1400,1000"};
    const std::map<std::string, std::string> env = {{"HOME", dir.path.string()}};
    std::vector<std::string> dump = browser;
    dump.insert(dump.end(), {"--dump-dom", "file://" + page.string()});
    Ran dom = run(dump, dir.path, env);
    REQUIRE_MESSAGE(dom.status == 0, dom.err);
    const std::string& d = dom.out;
    REQUIRE_MESSAGE(d.find("data-rendered=\"1\"") != std::string::npos, "the page's script did not finish:\n" << d.substr(0, 3000));
    // The page's own error sink: script errors, rejections, failed loads, CSP violations.
    auto sink = d.find("<pre id=\"errors\">");
    REQUIRE(sink != std::string::npos);
    CHECK_MESSAGE(d.compare(sink, 23, "<pre id=\"errors\"></pre>") == 0,
                  "the page reported errors: " << d.substr(sink, d.find("</pre>", sink) - sink));
    // Every slice drawn, each with its data attributes; the marks of the workers.
    CHECK(count(d, "data-call=\"") == c.slices);
    CHECK(count(d, "data-task=\"") == c.slices);
    CHECK(count(d, "data-error=\"") == c.failed);
    CHECK(count(d, "data-mark=\"start\"") == c.starts);
    CHECK(count(d, "data-mark=\"exit\"") == c.exits);
    CHECK(count(d, "data-mark=\"crash\"") == c.crashes);
    // Nothing from the trace became an element: with attribute values blanked out, no markup of
    // the fixture is left, and the hostile name is there as text.
    const std::string markup = without_attribute_values(d);
    CHECK(markup.find("<img") == std::string::npos);
    CHECK(markup.find("<b>") == std::string::npos);
    CHECK(markup.find("data-injected=") == std::string::npos);  // as an attribute, not as text
    if (c.trace == "hostile.json") {
      CHECK(d.find("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;") != std::string::npos);
      CHECK(d.find("rank 1 @ node-a (pid 777)") != std::string::npos);
    }
    if (c.trace == names.string()) {
      CHECK(count(d, "data-task=\"(one of the other task names)\"") == 10);
      CHECK(d.find("<span class=\"other\">other task names (10)</span>") != std::string::npos);  // the tasks table's row
      CHECK(d.find("Listed: the first 2,000 task names by name") != std::string::npos);
    } else {
      CHECK(d.find("<span class=\"other\">other task names") == std::string::npos);
    }

    // The screenshot, kept in the build directory as the test's artefact.
    const std::string suffix = c.trace == "basic.json"     ? ""
                               : c.trace == "hostile.json" ? "-hostile"
                               : c.trace == names.string() ? "-many-names"
                                                           : "-known-run";
    const fs::path png = fs::path(FERRY_TEST_BINARY_DIR) / ("report-test" + suffix + ".png");
    fs::remove(png);
    std::vector<std::string> shot = browser;
    shot.insert(shot.end(), {"--hide-scrollbars", "--screenshot=" + png.string(), "file://" + page.string()});
    Ran s = run(shot, dir.path, env);
    CHECK_MESSAGE(s.status == 0, s.err);
    REQUIRE(fs::exists(png));
    CHECK(fs::file_size(png) > 1000);
    CHECK(read_file(png).substr(0, 8) == "\x89PNG\r\n\x1a\n");
  }
}

TEST_CASE("Report.help_has_an_example") {
  support::TempDir dir;
  Ran r = report({"--help"}, dir.path);
  CHECK(r.status == 0);
  CHECK(r.out.find("Examples:") != std::string::npos);
  CHECK(r.out.find("ferry report run.trace") != std::string::npos);
  CHECK(r.out.find("-o,--output") != std::string::npos);
}

TEST_CASE("Report.writes_to_stdout_or_fails_with_status_1") {
  support::TempDir dir;
  Ran r = report({(data_dir / "basic.json").string(), "-o", "-"}, dir.path);
  CHECK(r.status == 0);
  CHECK(r.out.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(r.out.find("</html>") != std::string::npos);
  // A directory that does not exist: nothing written, status 1, and no temporary file left.
  r = report({(data_dir / "basic.json").string(), "-o", (dir.path / "no" / "r.html").string()}, dir.path);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("ferry report: cannot write " + (dir.path / "no" / "r.html").string()) == 0, r.err);
  // A write that fails (a full disk) is status 1 with the system's word for it.
  if (fs::exists("/dev/full")) {
    Ran full = run({"sh", "-c", std::string(FERRY_TEST_CLI) + " report " + (data_dir / "basic.json").string() +
                                    " -o - > /dev/full"}, dir.path);
    CHECK(full.status == 1);
    CHECK_MESSAGE(full.err.find("cannot write the report to stdout: No space left on device") != std::string::npos, full.err);
  } else {
    MESSAGE("a full disk: skipped (no /dev/full)");
  }
}

TEST_CASE("Report.a_page_with_a_long_name_is_written") {
  // Its temporary file, "." + the name + ".XXXXXX", went past the 255 bytes a name may have:
  // "cannot create a file in DIR: File name too long", for -o and for the default beside the trace.
  support::TempDir dir;
  const std::string stem(245, 'r');
  Ran r = report({(data_dir / "basic.json").string(), "-o", (dir.path / (stem + ".html")).string()}, dir.path);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(read_file(dir.path / (stem + ".html")).rfind("<!DOCTYPE html>", 0) == 0);
  fs::copy_file(data_dir / "basic.json", dir.path / (stem + ".json"));
  r = report({(dir.path / (stem + ".json")).string()}, dir.path);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(fs::exists(dir.path / (stem + ".html")));
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) entries += e.path().filename().string().front() == '.';
  CHECK(entries == 0);  // no temporary file left
}

TEST_CASE("Report.is_not_written_through_another_users_link") {
  // `-o /tmp/<their link>/r.html`: the rename put the page over r.html wherever the link
  // pointed (as root, anyone's).
  if (::geteuid() != 0) {  // only root can make a link of another user's
    MESSAGE("skipped: needs root to make another user's link");
    return;
  }
  support::TempDir dir;
  fs::create_directories(dir.path / "elsewhere");
  { std::ofstream(dir.path / "elsewhere" / "r.html") << "precious"; }
  fs::create_symlink(dir.path / "elsewhere", dir.path / "theirs");
  REQUIRE(::lchown((dir.path / "theirs").c_str(), 65534, 65534) == 0);
  Ran r = report({(data_dir / "basic.json").string(), "-o", (dir.path / "theirs" / "r.html").string()}, dir.path);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("a symbolic link owned by uid 65534") != std::string::npos, r.err);
  CHECK(read_file(dir.path / "elsewhere" / "r.html") == "precious");
}

TEST_CASE("Report.the_page_is_private_like_the_trace") {
  // It holds what the trace holds (task names, messages, host names), and traces are 0600.
  support::TempDir dir;
  fs::path out = dir.path / "r.html";
  Ran r = run({"sh", "-c", "umask 022; " + std::string(FERRY_TEST_CLI) + " report " +
                               (data_dir / "basic.json").string() + " -o " + out.string()},
              dir.path);
  REQUIRE(r.status == 0);
  CHECK((fs::status(out).permissions() & fs::perms::all) == fs::perms(0600));
}

namespace ferry_trace_files {

/// A FERRY_TRACE file's first lines as host/trace.cpp writes them, then one call and the ']'.
void write_run_file(const fs::path& path, long pid, const std::string& host, unsigned long sequence,
                    long long run_started_unix_us) {
  std::ofstream(path) << "[\n{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":" << pid
                      << ",\"tid\":0,\"ts\":0,\"args\":{\"name\":\"ferry executor\"}},\n"
                      << "{\"ph\":\"M\",\"name\":\"ferry\",\"pid\":" << pid
                      << ",\"tid\":0,\"ts\":0,\"args\":{\"version\":1,\"started_unix_us\":" << run_started_unix_us
                      << ",\"backend\":\"local\",\"max_workers\":1,\"host\":\"" << host
                      << "\",\"sequence\":" << sequence << ",\"run_started_unix_us\":" << run_started_unix_us
                      << "}},\n{\"ph\":\"X\",\"name\":\"add\",\"pid\":" << pid
                      << ",\"tid\":1,\"ts\":10,\"dur\":5,\"args\":{\"call\":1}}\n]\n";
}

/// The note of the page of `trace` that starts "A file of FERRY_TRACE", or "" when it has none.
std::string run_note_of(const fs::path& trace, const fs::path& dir) {
  Ran r = report({trace.string(), "-o", (dir / "page.html").string()}, dir);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  json::Document doc;
  page_data(dir / "page.html", doc);
  for (const std::string& n : notes(doc))
    if (n.rfind("A file of FERRY_TRACE", 0) == 0) return n;
  return "";
}

}  // namespace ferry_trace_files

TEST_CASE("Report.a_ferry_trace_file_names_its_run_and_the_files_beside_it_of_other_runs") {
  // A later run of the program writes over FERRY_TRACE's first names and leaves the others: the
  // page of one of them said nothing of which run it was of, nor that its neighbours were older.
  using namespace ferry_trace_files;
  support::TempDir dir;
  const fs::path traces = dir.path / "traces";
  fs::create_directories(traces);
  const long long run = 1'796'000'000'000'000, earlier = run - 3'600'000'000;
  // This run (process 100 on "node1"): its 4th trace wrapped round onto t.json.
  write_run_file(traces / "t.json", 100, "node1", 4, run);
  write_run_file(traces / "t.2.json", 100, "node1", 2, run);
  write_run_file(traces / "t.3.json", 100, "node1", 3, run);
  // An earlier run's files beside them: the same pid on another host, and another pid.
  write_run_file(traces / "t.4.json", 100, "node2", 4, earlier);
  write_run_file(traces / "t.10.json", 77, "node1", 10, earlier);
  // Not FERRY_TRACE's names, or not files it writes: never named, never read through or waited on.
  write_run_file(traces / "t.05.json", 100, "node1", 5, run);
  write_run_file(traces / "u.2.json", 100, "node1", 6, run);
  write_run_file(dir.path / "elsewhere.json", 100, "node1", 7, run);
  fs::create_symlink(dir.path / "elsewhere.json", traces / "t.7.json");
  REQUIRE(::mkfifo((traces / "t.8.json").c_str(), 0600) == 0);
  { std::ofstream(traces / "t.9.json") << "[\n{\"ph\":\"M\",\"name\":\"ferry\",\"pid\":100,\"args\":{\"version\":1}},\n]\n"; }
  // Another user's file in the directory (as in /tmp) claiming to be of this run: not counted.
  const bool as_root = ::geteuid() == 0;
  if (as_root) {
    write_run_file(traces / "t.11.json", 100, "node1", 11, run);
    REQUIRE(::chown((traces / "t.11.json").c_str(), 65534, 65534) == 0);
  } else {
    MESSAGE("another user's file: not tried (needs root to make one)");
  }

  const std::string note = run_note_of(traces / "t.2.json", dir.path);
  CHECK_MESSAGE(note.find("A file of FERRY_TRACE: trace 2 of the run of process 100 on node1 that started "
                          "2026-11-30 00:53:20 UTC.") == 0, note);
  CHECK_MESSAGE(note.find("The files of that run beside it, by sequence: t.2.json (2), t.3.json (3), t.json (4).") !=
                    std::string::npos, note);
  CHECK_MESSAGE(note.find("2 files of its names are of 2 other runs (the latest started 2026-11-29 23:53:20 UTC), "
                          "not of this one: t.4.json, t.10.json") != std::string::npos, note);
  for (const char* never : {"t.05.json", "u.2.json", "t.7.json", "t.8.json", "t.9.json", "t.11.json", "(5)", "(6)",
                            "(7)", "(11)"})
    CHECK_MESSAGE(note.find(never) == std::string::npos, never << " in: " << note);
  // The name given may be any of them; the name without a number too.
  CHECK(run_note_of(traces / "t.json", dir.path).find("trace 4 of the run of process 100") != std::string::npos);
  CHECK(run_note_of(traces / "t.10.json", dir.path).find("trace 10 of the run of process 77 on node1") !=
        std::string::npos);
}

TEST_CASE("Report.a_trace_of_a_path_the_program_named_has_no_run_note") {
  // ExecutorOptions::trace and --trace write no sequence: nothing is said of runs.
  using namespace ferry_trace_files;
  support::TempDir dir;
  CHECK(run_note_of(data_dir / "basic.json", dir.path).empty());
}

TEST_CASE("Report.the_run_note_reads_what_ferry_writes") {
  // FERRY_TRACE's header as the writer makes it, from two runs of `ferry run` with the same path:
  // the second run's t.json, with a hand-made t.2.json of the first run's header left beside it.
  using namespace ferry_trace_files;
  support::TempDir dir;
  const std::map<std::string, std::string> env{
      {"FERRY_TRACE", (dir.path / "t.json").string()},
      {"FERRY_PLUGIN_PATH", fs::path(FERRY_TEST_MATH_PLUGIN).parent_path().string()}};
  Ran first = run({FERRY_TEST_CLI, "run", "add", "1", "2"}, dir.path, env);
  REQUIRE_MESSAGE(first.status == 0, first.err);
  fs::rename(dir.path / "t.json", dir.path / "t.2.json");
  Ran second = run({FERRY_TEST_CLI, "run", "add", "1", "2"}, dir.path, env);
  REQUIRE_MESSAGE(second.status == 0, second.err);
  const std::string note = run_note_of(dir.path / "t.json", dir.path);
  CHECK_MESSAGE(note.find("A file of FERRY_TRACE: trace 1 of the run of process ") == 0, note);
  CHECK_MESSAGE(note.find("No other file of that run is beside it. 1 file of its names is of another run") !=
                    std::string::npos, note);
  CHECK_MESSAGE(note.find("not of this one: t.2.json") != std::string::npos, note);
}

TEST_CASE("Report.replays_the_fuzz_corpus") {
  // The fuzzer's seeds and every input it ever failed on (tests/data/fuzz/trace/crash-*), and the
  // traces of data/trace/: each must go through the reader, the summary and the page without a
  // crash or a broken invariant (tests/fuzz/trace_fuzz.hpp), and read from its file as it reads
  // from memory.
  std::size_t replayed = 0;
  for (const fs::path& dir : {fs::path(FERRY_TEST_DATA_DIR) / "fuzz" / "trace", data_dir}) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string bytes = read_file(entry.path());
      CAPTURE(entry.path().string());
      ferry::fuzz::trace_one_input(bytes);
      ferry::fuzz::trace_file_reads_as_text(entry.path(), bytes);
      ++replayed;
    }
  }
  CHECK(replayed >= 9);
}

namespace {

/// Whether `text` holds a bidirectional control (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066
/// to U+2069) or (when `separators`) the line or paragraph separator (U+2028, U+2029) as it is.
bool has_bidi_or_separator(const std::string& text, bool separators = true) {
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    const auto a = static_cast<unsigned char>(text[i]), b = static_cast<unsigned char>(text[i + 1]);
    if (a == 0xD8 && b == 0x9C) return true;
    if (a != 0xE2 || i + 2 >= text.size()) continue;
    const auto c = static_cast<unsigned char>(text[i + 2]);
    if (b == 0x80 && (c == 0x8E || c == 0x8F || (c >= (separators ? 0xA8 : 0xAA) && c <= 0xAE))) return true;
    if (b == 0x81 && c >= 0xA6 && c <= 0xA9) return true;
  }
  return false;
}

/// Debian's chromium or chromium-browser, or "" when neither is installed.
std::string chromium_path() {
  support::TempDir which_dir;
  for (const char* candidate : {"chromium", "chromium-browser"}) {
    Ran which = run({"sh", "-c", std::string("command -v ") + candidate}, which_dir.path);
    if (which.status == 0) return which.out.substr(0, which.out.find('\n'));
  }
  return "";
}

}  // namespace

TEST_CASE("Report.bidirectional_controls_are_escaped_in_the_page_and_shown_as_text") {
  // A right-to-left override in a trace's process name or crash reason showed the report's own
  // text after it reversed ("worker crash" read "hsarc rekrow"), and `-o -` sent it to a terminal
  // as it was. The page's data holds each character detail::escaped_on_terminal lists (these, the
  // line and paragraph separators, the C1 controls) as the text \uXXXX (\\u202e in the JSON), so
  // that the script shows each as that text without a list of its own (it had one, a second copy
  // of the terminal's, which knew the bidirectional controls only).
  support::TempDir dir;
  const std::string rlo = "\xE2\x80\xAE", rli = "\xE2\x81\xA7", rlm = "\xE2\x80\x8F", alm = "\xD8\x9C",
                    ls = "\xE2\x80\xA8", ps = "\xE2\x80\xA9";
  const std::string process = "ferry executor" + rlo, label = rli + "worker 42", name = "sq" + rlm + "uare",
                    reason = rlo + "LIGIS lengis", message = "line" + ls + "para" + ps + "alm" + alm;
  const fs::path trace = dir.path / "bidi.json";
  write_trace(trace, {
      R"({"name":"process_name","ph":"M","ts":0,"pid":1,"tid":0,"args":{"name":)" + quoted(process) + "}}",
      R"({"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":1,"args":{"name":)" + quoted(label) + "}}",
      R"({"name":"worker start","ph":"i","s":"t","ts":1,"pid":1,"tid":1,"args":{"pid":42,"host":"h"}})",
      R"({"name":)" + quoted(name) + R"(,"cat":"task","ph":"X","ts":2,"dur":5,"pid":1,"tid":1,)" +
          R"("args":{"call":1,"items":1,"error":"TaskError","message":)" + quoted(message) + "}}",
      R"({"name":"worker crash","ph":"i","s":"t","ts":9,"pid":1,"tid":1,"args":{"reason":)" + quoted(reason) +
          R"(,"error":"TerminatedWorkerError"}})",
  });
  REQUIRE(has_bidi_or_separator(read_file(trace)));
  const fs::path page = dir.path / "bidi.html";
  Ran to_file = report({trace.string(), "-o", page.string()}, dir.path);
  REQUIRE_MESSAGE(to_file.status == 0, to_file.err);
  Ran to_stdout = report({trace.string(), "-o", "-"}, dir.path);
  REQUIRE_MESSAGE(to_stdout.status == 0, to_stdout.err);
  const std::string file_page = read_file(page);
  const std::string& stdout_page = to_stdout.out;
  for (const std::string* html : {&file_page, &stdout_page}) {
    CAPTURE(html == &file_page ? "to a file" : "to stdout");
    CHECK(!has_bidi_or_separator(*html));  // the whole page, template included
    const std::string data = embedded_json(*html);
    for (const char* escape : {"\\u202e", "\\u2067", "\\u200f", "\\u061c", "\\u2028", "\\u2029"})
      CHECK_MESSAGE(data.find(escape) != std::string::npos, escape);
    json::Document doc;
    std::string error;
    REQUIRE_MESSAGE(ferry::detail::parse_json(data, doc, error), error);
    CHECK(str(doc["process"]) == "ferry executor\\u202e");
    CHECK(str(doc["tracks"][0]["label"]) == "\\u2067worker 42");
    CHECK(str(doc["tasks"][0]["name"]) == "sq\\u200fuare");
    REQUIRE(doc["failures"].Size() == 1);
    CHECK(str(doc["strings"][doc["failures"][0][5].GetUint()]) == "line\\u2028para\\u2029alm\\u061c");
    CHECK(!has_bidi_or_separator(json_text(doc)));  // what JSON.parse gives the script
  }
  CHECK(!has_bidi_or_separator(to_file.err + to_stdout.err));
  // The script has no list of them of its own.
  const std::string_view script = ferry::cli::assets::report_js;
  for (const char* escape : {"\\u061", "\\u200", "\\u202", "\\u206", "\\u00"})
    CHECK_MESSAGE(script.find(escape) == std::string_view::npos, escape);

  // In the browser, each is the text "\u202e".
  const std::string chromium = chromium_path();
  REQUIRE_MESSAGE(!chromium.empty(), "chromium is not installed: `make test` installs it (make report-deps)");
  Ran dom = run({chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--user-data-dir=" + (dir.path / "profile").string(), "--virtual-time-budget=5000",
                 "--window-size=1400,1000", "--dump-dom", "file://" + page.string()},
                dir.path, {{"HOME", dir.path.string()}});
  REQUIRE_MESSAGE(dom.status == 0, dom.err);
  const std::string& d = dom.out;
  REQUIRE_MESSAGE(d.find("data-rendered=\"1\"") != std::string::npos, "the page's script did not finish:\n" << d.substr(0, 3000));
  CHECK(d.compare(d.find("<pre id=\"errors\">"), 23, "<pre id=\"errors\"></pre>") == 0);
  CHECK(!has_bidi_or_separator(d));
  CHECK(d.find("ferry executor\\u202e") != std::string::npos);  // the subtitle
  CHECK(d.find("\\u2067worker 42") != std::string::npos);       // the worker's row
  CHECK(d.find("sq\\u200fuare") != std::string::npos);          // the task's row
  CHECK(d.find("\\u202eLIGIS lengis") != std::string::npos);    // the worker's end
}

TEST_CASE("Report.task_names_past_the_first_are_folded_into_one_row") {
  // The summary kept a row (its name, its durations) of every task name, and the page listed the
  // first max_tasks names plus the name of every call it drew: 300,000 names of 212 bytes held
  // 282 MB, and 200,000 calls of as many names made a page of 80 MB. Now the summary counts the
  // max_tasks smallest names on their own and the others together; the page lists those rows, then
  // "other task names", and a failure listed of a folded name still names it. 50 names here (t00
  // to t49, calls at times that do not follow the names), 5 kept: t00..t04.
  std::vector<std::string> events;
  for (int i = 49; i >= 0; --i) {
    char task[8];
    std::snprintf(task, sizeof task, "t%02d", i);
    const int ts = (i * 7) % 50;
    if (i == 47) {
      events.push_back(R"({"name":"call ended","ph":"i","ts":500,"args":{"call":47,"task":"t47","error":"CancelledError","message":"m"}})");
      continue;
    }
    events.push_back(std::string(R"({"name":")") + task + R"(","cat":"task","ph":"X","ts":)" + std::to_string(ts) +
                     R"(,"dur":)" + std::to_string(i + 1) + R"(,"pid":1,"tid":1,"args":{"call":)" + std::to_string(i) +
                     (i == 45 ? R"(,"error":"TaskError","message":"no")" : "") + "}}");
    events.push_back(R"({"name":"q","cat":"queue","ph":"b","id":)" + std::to_string(i) + R"(,"ts":0})");
    events.push_back(R"({"name":"q","cat":"queue","ph":"e","id":)" + std::to_string(i) + R"(,"ts":)" +
                     std::to_string(ts) + "}");
  }
  const trace::ReportLimits limits{.max_failures = 10, .max_tasks = 5};
  const trace::Summary s = summarize(trace_text(events), trace::summary_limits(limits));
  std::vector<std::string> kept;
  for (const auto& t : s.tasks) kept.push_back(t.name);
  CHECK(kept == std::vector<std::string>{"t00", "t01", "t02", "t03", "t04"});
  CHECK(s.tasks[3].durations == std::vector<double>{4});
  CHECK(s.tasks[3].waits == std::vector<double>{21});
  REQUIRE(s.tasks_folded());
  CHECK(s.other_tasks.name.empty());
  CHECK(s.other_tasks.calls == 44);  // t05..t49 but t47, which never ran
  CHECK(s.other_tasks.never_ran == 1);
  CHECK(s.other_tasks.failed == 1);
  CHECK(s.other_tasks.durations.size() == 44);
  CHECK(s.other_tasks.durations.front() == 6);
  CHECK(s.other_tasks.durations.back() == 50);
  CHECK(s.other_tasks.waits.size() == 44);
  for (const trace::Slice& sl : s.slices) CHECK((sl.task < 5 || sl.task == trace::other_task));
  // The failures keep the names of their folded tasks.
  REQUIRE(s.failures.size() == 2);
  for (const trace::Failure& f : s.failures) {
    REQUIRE(f.task == trace::other_task);
    REQUIRE(f.task_name >= 0);
  }
  CHECK(s.strings.strings()[static_cast<std::size_t>(s.failures[0].task_name)] == "t45");
  CHECK(s.strings.strings()[static_cast<std::size_t>(s.failures[1].task_name)] == "t47");

  json::Document doc;
  page_of(s, limits, doc);
  std::vector<std::string> names;
  for (const auto& t : doc["tasks"].GetArray()) names.push_back(t.HasMember("other") ? "(other)" : str(t["name"]));
  CHECK(names == std::vector<std::string>{"t00", "t01", "t02", "t03", "t04", "(other)"});
  CHECK(doc["tasks"][5]["calls"].GetUint64() == 44);
  CHECK(doc["tasks"][5]["never_ran"].GetUint64() == 1);
  CHECK(!doc.HasMember("tasks_total"));
  // A call of a folded name is drawn in the other row; a failure listed names its task.
  for (const auto& sl : doc["slices"].GetArray()) CHECK(sl[3].GetUint() <= 5);
  REQUIRE(doc["failures"].Size() == 2);
  for (const auto& f : doc["failures"].GetArray()) CHECK(f[2].GetUint() == 5);
  CHECK(str(doc["strings"][doc["failures"][0][6].GetUint()]) == "t45");
  CHECK(str(doc["strings"][doc["failures"][1][6].GetUint()]) == "t47");
  CHECK(any_contains(notes(doc), "Task names past the first 5 by name, 45 of them, are folded into one row of the "
                                 "tasks table, \"other task names\": 44 calls and 1 that never ran"));

  // Under the default limits, all 50, and no note.
  const trace::Summary all = summarize(trace_text(events));
  CHECK(all.tasks.size() == 50);
  CHECK(!all.tasks_folded());
  json::Document whole;
  page_of(all, {}, whole);
  CHECK(whole["tasks"].Size() == 50);
  for (const auto& f : whole["failures"].GetArray()) CHECK(f[6].IsNull());
  CHECK(!any_contains(notes(whole), "folded"));
  // A page of fewer rows than its summary folds the rest in the same way.
  json::Document fewer;
  page_of(all, limits, fewer);
  CHECK(json_text(fewer["tasks"]) == json_text(doc["tasks"]));
  CHECK(json_text(fewer["failures"]) == json_text(doc["failures"]));
}

TEST_CASE("Report.the_page_of_many_task_names_is_small_and_the_summary_too") {
  // 200,000 calls of as many task names of 212 bytes, on 8 workers: the page listed each name
  // (80 MB) and `ferry report` peaked at 204 MB. Now the first 2,000 names are listed and the
  // others folded into one row, which `ferry report` says: a page of 13 MB, about 70 MB of memory.
  // Bounds, not timings: the page's bytes and the peak resident size (getrusage of the child).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  MESSAGE("skipped under a sanitizer");
  return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
  MESSAGE("skipped under a sanitizer");
  return;
#endif
#endif
  support::TempDir dir;
  const fs::path file = dir.path / "names.json";
  {
    std::ofstream out(file, std::ios::binary);
    out << "[\n";
    char name[16];
    const std::string tail(199, 'n');
    for (int i = 0; i < 200'000; ++i) {
      std::snprintf(name, sizeof name, "task_%07d_", i);
      out << R"({"name":")" << name << tail << R"(","cat":"task","ph":"X","ts":)" << 5 * i
          << R"(,"dur":3,"pid":1,"tid":)" << 1 + i % 8 << R"(,"args":{"call":)" << i << "}},\n";
    }
    out << "]\n";
  }
  const auto size = fs::file_size(file);
  REQUIRE(size > 60'000'000);
  const fs::path page = dir.path / "names.html";
  Ran r = report({file.string(), "-o", page.string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.out == page.string() + ": 200000 calls on 8 workers (0 failed, 0 never ran)\n" + page.string() +
                     ": task names past the first 2000 by name folded into one row (198000 names, 198000 calls, 0 never "
                     "ran)\n");
  CHECK_MESSAGE(fs::file_size(page) < 16'000'000, "a page of " << fs::file_size(page) << " bytes");
  rusage usage{};
  REQUIRE(::getrusage(RUSAGE_CHILDREN, &usage) == 0);
  const auto peak = static_cast<std::uintmax_t>(usage.ru_maxrss) * 1024;  // KiB on Linux
  CHECK_MESSAGE(peak < size + (std::uintmax_t{32} << 20),
                "peak " << peak / 1024 / 1024 << " MiB for a trace of " << size / 1024 / 1024 << " MiB");
  json::Document doc;
  page_data(page, doc);
  CHECK(doc["tasks"].Size() == 2001);
  CHECK(doc["tasks"][2000].HasMember("other"));
  CHECK(doc["slices"].Size() == 200'000);
}

TEST_CASE("Report.the_texts_of_the_calls_and_marks_drawn_stop_at_max_text_bytes") {
  // 100,000 failed calls of distinct 1.9 KB messages made a page of 197 MB: every call drawn put
  // its message (and first input) into the page. The texts of the calls and marks drawn now stop
  // at ReportLimits::max_text_bytes (16 MiB), the first by time; past it a call is drawn with the
  // text "(left out: ...)", and the page says how many. A failure listed keeps its texts.
  std::vector<std::string> events;
  for (int i = 0; i < 400; ++i) {
    const std::string n = std::to_string(i);
    events.push_back(R"({"name":"square","cat":"task","ph":"X","ts":)" + std::to_string(1000 + i) +
                     R"(,"dur":1,"pid":1,"tid":1,"args":{"call":)" + n + R"(,"first_input":)" + n +
                     R"(,"error":"TaskError","message":"call )" + n + " " + std::string(480, 'm') + "\"}}");
    if (i < 100)
      events.push_back(R"({"name":"worker crash","ph":"i","s":"t","ts":)" + n + R"(,"pid":1,"tid":2,"args":{"reason":"r)" +
                       n + std::string(280, 'x') + "\"}}");
  }
  const trace::Summary s = summarize(trace_text(events));
  const trace::ReportLimits limits{.max_failures = 3, .max_text_bytes = 48 * 1024};
  json::Document doc;
  page_of(s, limits, doc);
  REQUIRE(doc["slices"].Size() == 400);
  REQUIRE(doc["marks"].Size() == 100);
  std::size_t text_bytes = 0;
  for (const auto& t : doc["strings"].GetArray()) text_bytes += t.GetStringLength() + 2;
  // The marks' reasons first (100 of 284 bytes), then the calls' messages and first inputs, the
  // first by time; the 3 failures listed (the first calls) add theirs outside the budget.
  CHECK(text_bytes < 48 * 1024 + 3 * 520 + 200);
  CHECK(text_bytes > 48 * 1024 - 600);
  const std::string left_out = "(left out: the page holds 48 KiB of the texts of the calls and marks it draws)";
  std::size_t calls_left_out = 0, calls_with_message = 0;
  for (const auto& sl : doc["slices"].GetArray()) {
    REQUIRE(sl[9].IsUint());  // failed, whatever was left out
    const std::string message = str(doc["strings"][sl[10].GetUint()]);
    if (message == left_out) {
      ++calls_left_out;
    } else {
      CHECK_MESSAGE(message.starts_with("call "), message);
      ++calls_with_message;
    }
  }
  CHECK(calls_with_message > 40);
  CHECK(calls_left_out > 300);
  CHECK(calls_left_out + calls_with_message == 400);
  // The failures listed keep theirs.
  REQUIRE(doc["failures"].Size() == 3);
  for (const auto& f : doc["failures"].GetArray()) CHECK(str(doc["strings"][f[5].GetUint()]).starts_with("call "));
  CHECK(any_contains(notes(doc), "The texts (errors, messages, first inputs, reasons) of " +
                                     std::to_string(calls_left_out) + " calls drawn are left out: the page holds "
                                     "48 KiB of them"));
  // Under the default limits, everything (400 messages of 490 bytes).
  json::Document all;
  page_of(s, {}, all);
  CHECK(!any_contains(notes(all), "are left out"));
  for (const auto& sl : all["slices"].GetArray()) CHECK(str(all["strings"][sl[10].GetUint()]).starts_with("call "));
  // Marks are counted too: with room for none of their reasons, each is left out.
  json::Document none;
  page_of(s, {.max_failures = 3, .max_text_bytes = 0}, none);
  CHECK(any_contains(notes(none), " calls and 100 worker marks drawn are left out"));
}

TEST_CASE("Report.a_cut_max_bytes_shows_its_ellipsis") {
  // The truncation note quoted max_bytes through printable(), which showed the "…" of a text cut
  // at 40 bytes as \xe2\x80\xa6.
  support::TempDir dir;
  const fs::path trace = dir.path / "truncated.json";
  write_trace(trace, {R"({"name":"trace truncated","ph":"i","s":"g","ts":1,"pid":1,"tid":0,"args":{"max_bytes":")" +
                      std::string(100, 'm') + "\"}}"});
  Ran r = report({trace.string(), "-o", (dir.path / "t.html").string()}, dir.path);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK_MESSAGE(r.err.find("(max_bytes \"mmm") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("mmm\xE2\x80\xA6\")") != std::string::npos, r.err);
  CHECK(r.err.find("\\xe2\\x80\\xa6") == std::string::npos);
}

TEST_CASE("Report.the_other_task_names_row_counts_its_distinct_names") {
  // The row "other task names" counted the calls of the names folded into it, not the names: a
  // note said "task names past the first 2,000" without how many. The summary now counts the
  // distinct names it folds (each by a hash, not kept), once however many calls each has, whether
  // it was never counted on its own or left the table for a smaller name.
  std::vector<std::string> events;
  int call = 0;
  auto slice = [&](const std::string& task) {
    events.push_back(R"({"name":")" + task + R"(","cat":"task","ph":"X","ts":)" + std::to_string(10 * call) +
                     R"(,"dur":1,"pid":1,"tid":1,"args":{"call":)" + std::to_string(call) + "}}");
    ++call;
  };
  // Three names kept (a, b, k at the end); z leaves for a, m for b; y and q are never kept; w never
  // ran. Folded: z, m, y, q, w.
  for (const char* task : {"m", "k", "z", "z", "a", "z", "y", "y", "b", "m", "q", "q", "q"}) slice(task);
  events.push_back(R"({"name":"call ended","ph":"i","ts":500,"args":{"call":99,"task":"w","error":"CancelledError"}})");
  const trace::ReportLimits limits{.max_tasks = 3};
  const trace::Summary s = summarize(trace_text(events), trace::summary_limits(limits));
  REQUIRE(s.tasks.size() == 3);
  CHECK(s.tasks[0].name == "a");
  CHECK(s.tasks[2].name == "k");
  CHECK(s.other_tasks.calls == 10);
  CHECK(s.other_tasks.never_ran == 1);
  CHECK(s.other_task_names == 5);
  json::Document doc;
  page_of(s, limits, doc);
  REQUIRE(doc["tasks"].Size() == 4);
  CHECK(doc["tasks"][3]["other"].GetBool());
  CHECK(doc["tasks"][3]["names"].GetUint64() == 5);
  CHECK(any_contains(notes(doc), "Task names past the first 3 by name, 5 of them, are folded into one row of the "
                                 "tasks table, \"other task names\": 10 calls and 1 that never ran"));
  // A summary that kept every name, drawn with 3 rows: the rows past them are counted as names.
  const trace::Summary all = summarize(trace_text(events));
  CHECK(all.other_task_names == 0);
  json::Document fewer;
  page_of(all, limits, fewer);
  CHECK(json_text(fewer["tasks"]) == json_text(doc["tasks"]));

  // Many: 10,000 names, each called twice, 10 kept (the hashes are merged in batches of 4,096).
  std::vector<std::string> many;
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 10'000; ++i)
      many.push_back(R"({"name":"n)" + std::to_string((i * 7919) % 10'000) + R"(","ph":"X","ts":)" +
                     std::to_string(i) + R"(,"dur":1,"tid":1,"args":{"call":)" + std::to_string(i) + "}}");
  const trace::Summary m = summarize(trace_text(many), trace::summary_limits({.max_tasks = 10}));
  CHECK(m.tasks.size() == 10);
  CHECK(m.other_tasks.calls == 19'980);
  CHECK(m.other_task_names == 9'990);
}

namespace {

/// The bytes of the texts a Summary holds (not let go).
std::size_t held_text_bytes(const trace::Summary& s) {
  std::size_t n = 0;
  for (const std::string& t : s.strings.strings()) n += t.size();
  return n;
}

}  // namespace

TEST_CASE("Report.the_summary_keeps_only_the_texts_the_page_shows") {
  // The page holds max_text_bytes of the calls' and marks' texts (16 MiB), but the summary kept the
  // texts of every call and mark it kept (up to twice the page's 200,000 calls): 100,000 failed
  // calls of distinct 1.9 KB messages still peaked at 252 MB. Now, each time the texts held grow by
  // a quarter of max_text_bytes, it lets go of those the page would not show, chosen as the page chooses them:
  // the page is the same, byte for byte, as the one of a summary that kept every text.
  // 100 crashes with reasons of 284 bytes, then 2,000 failed calls on two workers with distinct
  // messages of about 490 bytes (980 KB of them) and first inputs, in time order; the page holds
  // 48 KiB of their texts and lists 3 failures.
  std::vector<std::string> events;
  for (int i = 0; i < 100; ++i)
    events.push_back(R"({"name":"worker crash","ph":"i","s":"t","ts":)" + std::to_string(i) +
                     R"(,"pid":1,"tid":3,"args":{"reason":"r)" + std::to_string(i) + std::string(280, 'x') + "\"}}");
  for (int i = 0; i < 2000; ++i) {
    const std::string n = std::to_string(i);
    events.push_back(R"({"name":"square","cat":"task","ph":"X","ts":)" + std::to_string(1000 + i) +
                     R"(,"dur":1,"pid":1,"tid":)" + std::to_string(1 + i % 2) + R"(,"args":{"call":)" + n +
                     R"(,"first_input":)" + n + R"(,"error":"TaskError","message":"call )" + n + " " +
                     std::string(480, 'm') + "\"}}");
  }
  const std::string text = trace_text(events);
  const trace::ReportLimits limits{.max_failures = 3, .max_text_bytes = 48 * 1024};
  trace::SummaryLimits summary_limits = trace::summary_limits(limits);
  CHECK(summary_limits.max_text_bytes == 48 * 1024);
  summary_limits.text_check_bytes = 0;  // a look each 12 KiB, not each 1 MiB
  const trace::Summary s = summarize(text, summary_limits);
  // At most the page's texts, those of the 12 failures kept (4 x 3), and what came since the last
  // look (12 KiB at most).
  CHECK_MESSAGE(held_text_bytes(s) < 48 * 1024 + 12 * 1024 + 12 * 520 + 1024, held_text_bytes(s));
  CHECK(s.strings.let_go_count() > 1500);
  const trace::Summary all = summarize(text);
  CHECK(held_text_bytes(all) > 980'000);
  CHECK(all.strings.let_go_count() == 0);
  json::Document capped, whole;
  page_of(s, limits, capped);
  page_of(all, limits, whole);
  CHECK(json_text(capped) == json_text(whole));
  CHECK(any_contains(notes(capped), "calls drawn are left out: the page holds 48 KiB of them"));
  CHECK(!any_contains(notes(capped), "let go"));
  // What `ferry report` sets: the page's 16 MiB.
  CHECK(trace::summary_limits({}).max_text_bytes == trace::ReportLimits{}.max_text_bytes);
}

TEST_CASE("Report.a_text_let_go_that_a_call_read_later_makes_fit_is_counted") {
  // The summary lets go of the texts the page would not show if the trace ended there. A call read
  // later that comes earlier in the page's order can change which fit (the page takes each text
  // that fits in what is left, in its order): the page then shows "(left out ...)" for such a
  // text and says how many. Calls at 10, 20, 30 with texts of 600, 500 and 400 bytes in the page,
  // which holds 1,000: the first and the third fit, the second is let go when it is read; then a
  // call at 0 with 500 bytes comes. Keeping everything, the page would show it and the second. (A
  // look each 250 bytes of texts: after every call here.)
  auto call = [](int ts, int number, std::size_t bytes) {
    return R"({"name":"square","cat":"task","ph":"X","ts":)" + std::to_string(ts) +
           R"(,"dur":1,"pid":1,"tid":1,"args":{"call":)" + std::to_string(number) + R"(,"message":")" +
           std::string(bytes - 2, static_cast<char>('a' + number)) + "\"}}";
  };
  const std::string text = trace_text({call(10, 0, 600), call(20, 1, 500), call(30, 2, 400), call(0, 3, 500)});
  const trace::ReportLimits limits{.max_text_bytes = 1000};
  trace::SummaryLimits summary_limits = trace::summary_limits(limits);
  summary_limits.text_check_bytes = 1;
  const trace::Summary s = summarize(text, summary_limits);
  CHECK(s.strings.let_go_count() == 2);  // the second, then the first (past the 500 left by the call at 0)
  json::Document doc;
  page_of(s, limits, doc);
  REQUIRE(doc["slices"].Size() == 4);
  std::vector<std::string> shown;
  for (const auto& sl : doc["slices"].GetArray()) {
    const std::string m = str(doc["strings"][sl[10].GetUint()]);
    shown.push_back(m.starts_with("(left out") ? "-" : m.substr(0, 1));
  }
  // By time: call 3 (d), 0 (a: 600 past the 500 left), 1 (let go, though its 500 would fit), 2 (c).
  CHECK(shown == std::vector<std::string>{"d", "-", "-", "c"});
  CHECK(any_contains(notes(doc), "The texts (errors, messages, first inputs, reasons) of 2 calls drawn are left out: "
                                 "the page holds 1000 bytes of them, the first by time (a failure listed keeps "
                                 "its texts). 1 text that would fit was let go as the trace was read, before "
                                 "calls or marks that came earlier in time were read (the trace is not in time "
                                 "order): the page holds less than that."));
  // Keeping everything: d and b.
  json::Document whole;
  page_of(summarize(text), limits, whole);
  std::vector<std::string> all;
  for (const auto& sl : whole["slices"].GetArray()) {
    const std::string m = str(whole["strings"][sl[10].GetUint()]);
    all.push_back(m.starts_with("(left out") ? "-" : m.substr(0, 1));
  }
  CHECK(all == std::vector<std::string>{"d", "-", "b", "-"});
}
