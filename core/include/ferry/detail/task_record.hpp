// SPDX-License-Identifier: BSD-3-Clause
// The plugin ABI: the record FERRY_TASK exports for each task, and the context the worker hands
// its entry points. Both sides of the plugin boundary compile against this file; a change to
// anything here is a change of plugin_abi_version.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string_view>

namespace ferry::detail {

/// Bumped whenever the record layout or the invoke contract below changes (2: InvokeContext::deliver;
/// 3: shared trailing arguments, invoke_shared_shift; 4: TaskRecordHeader::layout).
inline constexpr std::uint32_t plugin_abi_version = 4;
inline constexpr std::string_view task_symbol_prefix = "ferry_task:";
inline constexpr std::string_view task_section = "ferry_tasks";
inline constexpr char task_record_magic[8] = {'F', 'E', 'R', 'R', 'Y', 'T', 'K', '\0'};

/// Whether `n` may name a task: not empty, printable ASCII without spaces, quotes or backslashes,
/// a colon only in "::". FERRY_TASK checks it at compile time, a plugin's reader in every record
/// (a record made by hand could name a task with escape sequences, invisible or look-alike
/// characters). Judged by unsigned byte: no character past ASCII, whatever char's sign.
constexpr bool valid_task_name(std::string_view n) noexcept {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const auto c = static_cast<unsigned char>(n[i]);
    if (c <= ' ' || c >= 127 || c == '"' || c == '\\') return false;
    if (c == ':' && !((i + 1 < n.size() && n[i + 1] == ':') || (i > 0 && n[i - 1] == ':'))) return false;
  }
  return true;
}

enum class InvokeStatus : std::uint32_t {
  ok = 0,
  decode_arguments_failed = 1,
  task_threw = 2,
  encode_result_failed = 3,
};

/// How ferry's JSON output names the stage an entry point stopped at (`ferry map --keep-going`'s
/// "stage"): the InvokeStatus spelled once, beside it; "" for ok.
constexpr const char* invoke_stage_name(InvokeStatus s) noexcept {
  switch (s) {
    case InvokeStatus::ok: return "";
    case InvokeStatus::decode_arguments_failed: return "decode_arguments";
    case InvokeStatus::task_threw: return "task";
    case InvokeStatus::encode_result_failed: return "encode_result";
  }
  return "";
}

/// InvokeContext::flags.
inline constexpr std::uint32_t invoke_keep_going = 1;  ///< JSON: an item's error is its result
/// Bits 8 to 15: how many trailing parameters every item of the chunk shares (Executor::map's
/// constant extra arguments). Their values come once, before the items' own.
inline constexpr std::uint32_t invoke_shared_shift = 8;
inline constexpr std::uint32_t invoke_shared_mask = 0xff;

struct InvokeContext;
using InvokeFn = void (*)(InvokeContext&) noexcept;

/// What the worker hands a task's entry point. Results of every item are appended to `result`; on
/// failure "<exception type>\0<what>" goes to `error`, `status` says at which stage and
/// `failed_item` at which item of a map chunk.
///
/// Once the last item's result is encoded, the entry point calls `deliver` (when set) *before*
/// that item's arguments are destroyed, and sets `delivered`: the worker sends the results then,
/// so an argument whose destructor crashes the worker does not lose a finished result (as loky
/// sends a result before the arguments are garbage-collected).
struct InvokeContext {
  const char* args;
  std::uint64_t args_size;
  std::uint32_t items;
  std::uint32_t failed_item;
  InvokeStatus status;
  std::uint32_t flags;
  std::streambuf* result;
  std::streambuf* error;
  InvokeFn deliver = nullptr;
  void* worker = nullptr;   ///< the worker's own data, for `deliver`
  bool delivered = false;   ///< `deliver` ran: the worker must not send the results again
};

/// Calls ctx.deliver once, with the results complete and the status ok.
inline void deliver_results(InvokeContext& ctx) noexcept {
  ctx.status = InvokeStatus::ok;
  if (ctx.deliver && !ctx.delivered) {
    ctx.delivered = true;
    ctx.deliver(ctx);
  }
}
using AddressFn = const void* (*)() noexcept;
/// Returns the layout text of the task's signature (detail/layout.hpp): "" when it has no user type.
using LayoutFn = const char* (*)() noexcept;

/// Fixed prefix of every exported record. The text (name, NUL, signature, NUL) follows it. All
/// fields but the three pointers are plain bytes, so the manifest can be read from the file without
/// loading the library.
struct TaskRecordHeader {
  char magic[8];
  std::uint32_t abi;
  std::uint32_t record_size;
  std::uint64_t fingerprint;
  std::uint32_t name_size;
  std::uint32_t signature_size;
  InvokeFn invoke;       ///< arguments and results in cereal's binary archive
  InvokeFn invoke_json;  ///< the same, one JSON object per item and line (cereal's JSON archive)
  AddressFn address;     ///< returns the task function's address (host-side lookup by function)
  LayoutFn layout;       ///< what the signature's user types serialize, as the plugin defines them
};
static_assert(sizeof(TaskRecordHeader) == 64);

template <std::size_t TextSize>
struct TaskRecord {
  TaskRecordHeader header;
  char text[TextSize];
};

}  // namespace ferry::detail
