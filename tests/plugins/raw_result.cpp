// SPDX-License-Identifier: BSD-3-Clause
// A plugin whose tasks write their own JSON result lines instead of FERRY_TASK's: what any
// plugin's code can do, since the entry point is the plugin's (test_cli: ferry run --raw).
//   trailing_escape  {"value0":1} followed by an OSC 52 (clipboard), an OSC 0 (title) and "\rfake"
//   array_line       [1,2], a JSON value that is no object
//   spaced_line      {"value0":\r"x"}: an object with a carriage return between its tokens
//   hostile_type     fails as if it threw an exception whose type names an escape sequence
// Each takes no argument and says its signature is i32().
#include <cstdint>
#include <ios>
#include <string_view>

#include <ferry/detail/task_record.hpp>
#include <ferry/detail/type_name.hpp>

namespace {

using namespace ferry::detail;

template <const std::string_view& Line>
void write_line(InvokeContext& c) noexcept {
  for (std::uint32_t i = 0; i < c.items; ++i) {
    c.result->sputn(Line.data(), static_cast<std::streamsize>(Line.size()));
    c.result->sputc('\n');
  }
  deliver_results(c);
}

/// Fails as a task that threw an exception of type `Type` with message `Message` would.
template <const std::string_view& Type, const std::string_view& Message>
void throw_as(InvokeContext& c) noexcept {
  c.error->sputn(Type.data(), static_cast<std::streamsize>(Type.size()));
  c.error->sputc('\0');
  c.error->sputn(Message.data(), static_cast<std::streamsize>(Message.size()));
  c.status = InvokeStatus::task_threw;
}

const void* no_address() noexcept { return nullptr; }
const char* no_layout() noexcept { return ""; }

constexpr std::string_view signature = "i32()";

/// The text's size for a task `name`: name, NUL, signature, NUL, rounded up to 8 bytes (as
/// FERRY_TASK's records are).
constexpr std::size_t text_size(std::string_view name) { return (name.size() + signature.size() + 2 + 7) / 8 * 8; }

template <std::size_t N>
constexpr TaskRecord<N> record(std::string_view name, InvokeFn invoke) {
  TaskRecord<N> r{};
  for (int i = 0; i < 8; ++i) r.header.magic[i] = task_record_magic[i];
  r.header.abi = plugin_abi_version;
  r.header.record_size = sizeof r;
  r.header.fingerprint = fnv1a(signature);
  r.header.name_size = static_cast<std::uint32_t>(name.size());
  r.header.signature_size = static_cast<std::uint32_t>(signature.size());
  r.header.invoke = r.header.invoke_json = invoke;
  r.header.address = &no_address;
  r.header.layout = &no_layout;
  std::size_t at = 0;
  for (char ch : name) r.text[at++] = ch;
  r.text[at++] = '\0';
  for (char ch : signature) r.text[at++] = ch;
  r.text[at] = '\0';
  return r;
}

constexpr std::string_view trailing_escape_text = "{\"value0\":1}\x1b]52;c;cHduZWQ=\x07\x1b]0;pwned\x07\rfake";
constexpr std::string_view array_line_text = "[1,2]";
constexpr std::string_view spaced_line_text = "{\"value0\":\r\"x\"}";
constexpr std::string_view hostile_type_name = "Evil\x1b]0;owned\x07";
constexpr std::string_view hostile_type_message = "two\\lines\nsecond";

}  // namespace

#define FERRY_TEST_RAW_TASK(name)                                                                   \
  extern __attribute__((visibility("default"), used, section("ferry_tasks"))) constinit const      \
      ferry::detail::TaskRecord<text_size(#name)> name##_record __asm__("\"ferry_task:" #name "\"") =   \
          record<text_size(#name)>(#name, &write_line<name##_text>);

FERRY_TEST_RAW_TASK(trailing_escape)
FERRY_TEST_RAW_TASK(array_line)
FERRY_TEST_RAW_TASK(spaced_line)
extern __attribute__((visibility("default"), used, section("ferry_tasks"))) constinit const
    ferry::detail::TaskRecord<text_size("hostile_type")> hostile_type_record __asm__("\"ferry_task:hostile_type\"") =
        record<text_size("hostile_type")>("hostile_type", &throw_as<hostile_type_name, hostile_type_message>);
