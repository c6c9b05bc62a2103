// SPDX-License-Identifier: BSD-3-Clause
// Why a call failed in a worker, as one typed value: the worker builds it and sends it after a
// result head, the host turns it back into the ferry::Error leaf its future throws. Both
// directions live here, side by side, so that a kind cannot be sent that the host does not read.
//
// Body of a failed result (after the 16-byte result head), little-endian:
//   u8 kind · u32 item · u32 plugin_abi · str exception_type · str message · str library ·
//   str signature · stack (wire/stack.hpp: u32 count · count × u64 · str maps)
// Every field is always present; a kind leaves the ones it does not use empty (or 0). Only
// task_threw carries a stack: where the exception was thrown (protocol 4).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include <ferry/detail/export.hpp>
#include <ferry/errors.hpp>
#include <ferry/task.hpp>

#include "wire/protocol.hpp"
#include "wire/stack.hpp"

namespace ferry::detail {

/// Every way a call can fail in a worker, the wire value of each fixed.
enum class FailureKind : std::uint8_t {
  // A stage of the call itself (call_stages below ties them to InvokeStatus and SerializationStage).
  decode_arguments = 1,    // exception_type, message; signature: the task's
  task_threw = 2,          // exception_type, message: what the task let escape
  encode_result = 3,       // exception_type, message; signature: the task's
  // Resolving the task reference, before any call.
  library_missing = 4,     // library; message: "no such file"
  library_unloadable = 5,  // library; message: the loader's
  symbol_missing = 6,      // library; message: the loader's
  not_a_plugin = 7,        // library; message: what its symbol is instead
  abi_mismatch = 8,        // library; plugin_abi: the plugin's ABI version
  signature_mismatch = 9,  // library; signature: the plugin's (the host knows its own); message:
                           // the plugin's layout when only the layouts differ
  main_program = 10,       // library: the host's executable; message: the loader's
  no_json_entry = 11,      // library: a plugin built without the JSON entry point (FERRY_WRAP, or
                           // a task of ferry::binary_only types)
};
inline constexpr std::uint8_t max_failure_kind = 11;

/// A failure as the worker reports it. Built with the factories (one per kind), which say which
/// fields each kind fills.
struct FERRY_INTERNAL_API Failure {
  FailureKind kind = FailureKind::task_threw;
  std::uint32_t item = 0;        // stages: the item of a map chunk that failed
  std::uint32_t plugin_abi = 0;  // abi_mismatch
  std::string exception_type;    // stages: the demangled type of the exception
  std::string message;           // stages: its what(); resolution: the loader's own words
  std::string library;           // resolution: the path the worker tried
  std::string signature;         // stages, signature_mismatch: the plugin's signature of the task
  RawStack stack;                // task_threw: where the exception was thrown, when known

  // ---- worker side ----------------------------------------------------------------------------
  /// The task's entry point failed at `stage` (an InvokeStatus other than ok).
  static Failure in_stage(InvokeStatus stage, std::uint32_t item, std::string exception_type,
                          std::string message, std::string signature);
  static Failure library_missing(std::string library);
  static Failure library_unloadable(std::string library, std::string loader_message);
  static Failure symbol_missing(std::string library, std::string loader_message);
  static Failure not_a_plugin(std::string library, std::string why);
  static Failure abi_mismatch(std::string library, std::uint32_t plugin_abi);
  static Failure signature_mismatch(std::string library, std::string plugin_signature,
                                    std::string plugin_layout = {});
  static Failure main_program(std::string executable, std::string loader_message);
  static Failure no_json_entry(std::string library);
};

/// A whole result frame (header, head, body) saying that `call` failed. `status` is
/// ResultStatus::failed, or init_failed (call 0) for the initializer.
FERRY_INTERNAL_API Buffer encode_failure(std::uint64_t call, const Failure& f,
                      protocol::ResultStatus status = protocol::ResultStatus::failed);
/// What the host keeps of a failure's message, and of its exception type, library and
/// signature: the rest is cut, the text says how much (a worker could send 1 GiB of message).
inline constexpr std::size_t max_failure_message = 64 * 1024;
inline constexpr std::size_t max_failure_name = 16 * 1024;
/// The body after a failed (or init_failed) result head; the body must end with it. Texts are
/// cut at max_failure_message and max_failure_name.
/// @throws protocol::ProtocolError on an unknown kind, truncated fields or a malformed stack.
FERRY_INTERNAL_API Failure decode_failure(protocol::BodyReader& r);

// ---- host side ----------------------------------------------------------------------------------

/// What the host knows of the failed call beyond what the worker says.
struct FailureContext {
  std::string_view task;        // the task as the user named it, for messages
  const protocol::Define& ref;  // the reference sent for it: task name, expected signature
  std::uint32_t items = 1;      // items of the call (a map chunk's, or a submit_json's lines)
  int pid = 0;                  // the worker's
  bool inputs_named = false;    // the caller names the failed input (Error::input_index)
};

/// A failure of one item of a call (its stage says which item): not of the reference.
constexpr bool failed_at_item(FailureKind k) noexcept {
  return k == FailureKind::decode_arguments || k == FailureKind::task_threw ||
         k == FailureKind::encode_result;
}

/// The ferry::Error leaf the call's future throws.
FERRY_INTERNAL_API std::exception_ptr to_exception(const Failure& f, const FailureContext& c);
/// The BrokenProcessPool of a pool whose initializer (`c.task`) failed this way in a worker.
FERRY_INTERNAL_API std::exception_ptr initializer_failed(const Failure& f, const FailureContext& c);
/// `error` naming `count` inputs of a map from `first` (Error::input_index): a copy of it, of
/// its own type; `error` itself as it is when it names inputs already or is no ferry::Error. One
/// error object may end many calls (a broken pool's, a shutdown's, a killed worker's): naming the
/// inputs on it gave every call the first one's, and wrote its text while other threads could
/// read it.
std::exception_ptr with_inputs(const std::exception_ptr& error, std::size_t first, std::size_t count);

// ---- the stages of a call -----------------------------------------------------------------------

/// The stages a call passes, in order, and how each enum that names stages spells them: the one
/// list behind the conversions below (InvokeStatus is the plugin ABI, SerializationStage public
/// API, FailureKind the wire; each names only the stages it can see). A stage an enum cannot see
/// is nullopt there.
struct CallStage {
  std::optional<SerializationStage> serialization;
  std::optional<InvokeStatus> invoke;
  std::optional<FailureKind> failure;
};
inline constexpr CallStage call_stages[] = {
    {SerializationStage::encode_arguments, std::nullopt, std::nullopt},  // host, at submit
    {SerializationStage::decode_arguments, InvokeStatus::decode_arguments_failed,
     FailureKind::decode_arguments},                                    // worker
    {std::nullopt, InvokeStatus::task_threw, FailureKind::task_threw},  // worker: the task runs
    {SerializationStage::encode_result, InvokeStatus::encode_result_failed,
     FailureKind::encode_result},                                       // worker
    {SerializationStage::decode_result, std::nullopt, std::nullopt},    // host, at get()
};

/// The failure kind of an entry point that stopped at `s`; nullopt for InvokeStatus::ok.
constexpr std::optional<FailureKind> failure_kind_of(InvokeStatus s) {
  for (const auto& stage : call_stages)
    if (stage.invoke == s) return stage.failure;
  return std::nullopt;
}
/// The serialization stage of a failure kind; nullopt for kinds that are not serialization.
constexpr std::optional<SerializationStage> serialization_stage_of(FailureKind k) {
  for (const auto& stage : call_stages)
    if (stage.failure == k) return stage.serialization;
  return std::nullopt;
}
/// Whether a kind is a stage of the call (its body holds an exception), not a resolution failure.
constexpr bool is_call_stage(FailureKind k) {
  for (const auto& stage : call_stages)
    if (stage.failure == k) return true;
  return false;
}

namespace failure_checks {
/// Each value named by the table is named by exactly one row, and every stage the worker sees
/// (an InvokeStatus) is a failure kind: the mappings above are total and one-to-one.
template <class E, class Member>
constexpr int rows_naming(E value, Member member) {
  int n = 0;
  for (const auto& stage : call_stages)
    if (stage.*member == value) ++n;
  return n;
}
constexpr bool one_to_one() {
  for (const auto& stage : call_stages) {
    if (stage.serialization && rows_naming(*stage.serialization, &CallStage::serialization) != 1)
      return false;
    if (stage.invoke && rows_naming(*stage.invoke, &CallStage::invoke) != 1) return false;
    if (stage.failure && rows_naming(*stage.failure, &CallStage::failure) != 1) return false;
    if (stage.invoke.has_value() != stage.failure.has_value()) return false;
  }
  return true;
}
}  // namespace failure_checks
static_assert(failure_checks::one_to_one(),
              "call_stages: every stage appears once per enum, and every InvokeStatus stage has a "
              "FailureKind");
static_assert(!failure_kind_of(InvokeStatus::ok), "InvokeStatus::ok is no failure");
static_assert([] {
  for (const auto& stage : call_stages)
    if (stage.invoke && invoke_stage_name(*stage.invoke)[0] == '\0') return false;
  return true;
}(), "call_stages: every stage the worker sees has its JSON name (invoke_stage_name)");
static_assert(failure_kind_of(InvokeStatus::decode_arguments_failed) == FailureKind::decode_arguments &&
              failure_kind_of(InvokeStatus::task_threw) == FailureKind::task_threw &&
              failure_kind_of(InvokeStatus::encode_result_failed) == FailureKind::encode_result);
static_assert(serialization_stage_of(FailureKind::decode_arguments) == SerializationStage::decode_arguments &&
              serialization_stage_of(FailureKind::encode_result) == SerializationStage::encode_result &&
              !serialization_stage_of(FailureKind::task_threw) &&
              !serialization_stage_of(FailureKind::library_missing));

}  // namespace ferry::detail
