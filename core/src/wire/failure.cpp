// SPDX-License-Identifier: BSD-3-Clause
// The failure codec: worker-side factories and encoding, host-side decoding and to_exception.
#include "wire/failure.hpp"

#include <exception>
#include <memory>
#include <utility>

#include "platform/format.hpp"
#include "platform/symbolize.hpp"

namespace ferry::detail {

// ---- worker side --------------------------------------------------------------------------------

Failure Failure::in_stage(InvokeStatus stage, std::uint32_t item, std::string exception_type,
                          std::string message, std::string signature) {
  Failure f;
  // An entry point that reports ok has not failed; a caller asking anyway has a bug, and the host
  // would rather read "the task threw" than a kind it cannot explain.
  f.kind = failure_kind_of(stage).value_or(FailureKind::task_threw);
  f.item = item;
  f.exception_type = std::move(exception_type);
  f.message = std::move(message);
  f.signature = std::move(signature);
  return f;
}

namespace {
Failure resolution(FailureKind kind, std::string library, std::string message = {}) {
  Failure f;
  f.kind = kind;
  f.library = std::move(library);
  f.message = std::move(message);
  return f;
}
}  // namespace

Failure Failure::library_missing(std::string library) {
  // The loader's words for it, so that a missing executable reads like any unloadable one.
  return resolution(FailureKind::library_missing, std::move(library), "no such file");
}
Failure Failure::library_unloadable(std::string library, std::string loader_message) {
  return resolution(FailureKind::library_unloadable, std::move(library), std::move(loader_message));
}
Failure Failure::symbol_missing(std::string library, std::string loader_message) {
  return resolution(FailureKind::symbol_missing, std::move(library), std::move(loader_message));
}
Failure Failure::not_a_plugin(std::string library, std::string why) {
  return resolution(FailureKind::not_a_plugin, std::move(library), std::move(why));
}
Failure Failure::abi_mismatch(std::string library, std::uint32_t plugin_abi) {
  Failure f = resolution(FailureKind::abi_mismatch, std::move(library));
  f.plugin_abi = plugin_abi;
  return f;
}
Failure Failure::signature_mismatch(std::string library, std::string plugin_signature,
                                   std::string plugin_layout) {
  Failure f = resolution(FailureKind::signature_mismatch, std::move(library), std::move(plugin_layout));
  f.signature = std::move(plugin_signature);
  return f;
}
Failure Failure::main_program(std::string executable, std::string loader_message) {
  return resolution(FailureKind::main_program, std::move(executable), std::move(loader_message));
}
Failure Failure::no_json_entry(std::string library) {
  return resolution(FailureKind::no_json_entry, std::move(library));
}

Buffer encode_failure(std::uint64_t call, const Failure& f, protocol::ResultStatus status) {
  Buffer body;
  protocol::BodyWriter w(body);
  w.u8(static_cast<std::uint8_t>(f.kind))
      .u32(f.item)
      .u32(f.plugin_abi)
      .str(f.exception_type)
      .str(f.message)
      .str(f.library)
      .str(f.signature);
  encode_stack(w, f.stack);
  Buffer out = protocol::encode_result_head({call, status}, body.size());
  out.append(body.data(), body.size());
  return out;
}

// ---- host side ----------------------------------------------------------------------------------

// A failure's text is kept as cut_text cuts it: the worker's word, copied into what() and the
// error's fields (a frame of 1 GiB of message cost the host a few GiB).
Failure decode_failure(protocol::BodyReader& r) {
  Failure f;
  std::uint8_t kind = r.u8();
  if (kind == 0 || kind > max_failure_kind)
    throw protocol::ProtocolError("unknown failure kind " + std::to_string(kind));
  f.kind = static_cast<FailureKind>(kind);
  f.item = r.u32();
  f.plugin_abi = r.u32();
  f.exception_type = cut_text(r.str(), max_failure_name);
  f.message = cut_text(r.str(), max_failure_message);
  f.library = cut_text(r.str(), max_failure_name);
  f.signature = cut_text(r.str(), max_failure_name);
  f.stack = decode_stack(r);
  r.expect_end();
  return f;
}

namespace {
/// `f` with what the worker said as an error's what() carries it (message_text): a loader's
/// message, a type, names. A task's own exception is the exception: TaskError keeps its bytes.
Failure shown_failure(const Failure& f) {
  Failure s = f;
  for (std::string* text : {&s.exception_type, &s.message, &s.library, &s.signature}) *text = message_text(*text);
  return s;
}
}  // namespace

std::exception_ptr to_exception(const Failure& given, const FailureContext& c) {
  Failure shown;
  const Failure& f = given.kind == FailureKind::task_threw ? given : (shown = shown_failure(given));
  const std::string task(c.task);
  const std::string& name = c.ref.name;
  const std::string symbol = std::string(task_symbol_prefix) + name;
  const std::string item =
      // Several items with no inputs to name: a submit_json of several lines (a map's chunk names
      // its input instead). "of its map chunk" misled there: no map was made.
      // An item past the call's is the worker's nonsense: no item is named.
      c.items > 1 && !c.inputs_named && f.item < c.items
          ? " (item " + std::to_string(f.item) + " of the call's " + std::to_string(c.items) + ")"
          : std::string();
  switch (f.kind) {
    case FailureKind::task_threw:
      return std::make_exception_ptr(TaskError(
          task + item, f.exception_type, f.message, c.pid,
          f.stack.empty() ? nullptr : RemoteStack::make(f.stack, false)));
    case FailureKind::decode_arguments:
    case FailureKind::encode_result:
      return std::make_exception_ptr(SerializationError(*serialization_stage_of(f.kind), f.signature,
                                                        f.exception_type + ": " + f.message + item,
                                                        task));
    case FailureKind::library_missing:
      return std::make_exception_ptr(PluginError::file_missing(f.library, symbol));
    case FailureKind::library_unloadable:
      return std::make_exception_ptr(PluginError::load_failed(f.library, symbol, f.message));
    case FailureKind::symbol_missing:
      return std::make_exception_ptr(PluginError::symbol_not_found(f.library, symbol, f.message));
    case FailureKind::not_a_plugin:
      return std::make_exception_ptr(PluginError::not_ferry_plugin(f.library));
    case FailureKind::abi_mismatch:
      return std::make_exception_ptr(
          PluginError::abi_mismatch(f.library, name, f.plugin_abi, plugin_abi_version));
    case FailureKind::signature_mismatch:
      if (!f.message.empty())
        return std::make_exception_ptr(
            PluginError::layout_mismatch(f.library, name, f.signature, f.message, c.ref.layout));
      return std::make_exception_ptr(
          PluginError::signature_mismatch(f.library, name, f.signature, c.ref.signature));
    case FailureKind::main_program:
      // The executable as the host named it: an MPI agent points its worker elsewhere (a path
      // that cannot load and says why, in the loader's message).
      return std::make_exception_ptr(UnresolvableTaskError::main_program(name, c.ref.library, f.message));
    case FailureKind::no_json_entry:
      return std::make_exception_ptr(PluginError::load_failed(
          f.library, symbol,
          "task '" + name +
              "' has no JSON entry point (a FERRY_WRAP function, or a task whose types only cereal's "
              "binary archive carries: ferry::binary_only; submit it by function)"));
  }
  // decode_failure admits no other kind; a Failure built in this process with a cast is a bug.
  return std::make_exception_ptr(Error("ferry: worker " + std::to_string(c.pid) + " answered task '" +
                                       task + "' with unknown failure kind " +
                                       std::to_string(static_cast<int>(f.kind))));
}

namespace {

/// The pool's error, with the initializer's own as its cause: std::rethrow_if_nested gives it
/// (its message as thrown, its type, its remote stack), which the message can only quote.
class InitializerFailed final : public BrokenProcessPool, public std::nested_exception {
 public:
  using BrokenProcessPool::BrokenProcessPool;
};

}  // namespace

std::exception_ptr initializer_failed(const Failure& f, const FailureContext& c) {
  const std::exception_ptr cause = to_exception(f, c);
  std::string why;
  if (is_call_stage(f.kind)) {
    why = message_text(f.exception_type) + ": " + message_text(f.message);
  }
  try {
    std::rethrow_exception(cause);
  } catch (const std::exception& e) {
    // It never ran: say why as a submit of it would (the PluginError's own message).
    if (why.empty()) why = e.what();
    // Made here, where the cause is the exception being handled: nested_exception keeps it.
    return std::make_exception_ptr(InitializerFailed("initializer '" + std::string(c.task) +
                                                     "' failed in worker " + std::to_string(c.pid) +
                                                     ": " + why));
  }
}

namespace {
template <class E>
std::exception_ptr named_copy(const std::exception_ptr& error, const E& e, std::size_t first, std::size_t count) {
  if (e.input_index()) return error;
  E copy(e);
  copy.set_input_index(first, count);
  return std::make_exception_ptr(std::move(copy));
}
}  // namespace

std::exception_ptr with_inputs(const std::exception_ptr& error, std::size_t first, std::size_t count) {
  // Each type ferry makes, the most derived first: a type left out here would be copied as its
  // base (a catch by the derived type would miss it).
  try {
    std::rethrow_exception(error);
  } catch (const InitializerFailed& e) {
    return named_copy(error, e, first, count);
  } catch (const ResourceLimitError& e) {
    return named_copy(error, e, first, count);
  } catch (const SandboxViolationError& e) {
    return named_copy(error, e, first, count);
  } catch (const TerminatedWorkerError& e) {
    return named_copy(error, e, first, count);
  } catch (const TaskError& e) {
    return named_copy(error, e, first, count);
  } catch (const UnresolvableTaskError& e) {
    return named_copy(error, e, first, count);
  } catch (const SerializationError& e) {
    return named_copy(error, e, first, count);
  } catch (const PluginError& e) {
    return named_copy(error, e, first, count);
  } catch (const BrokenProcessPool& e) {
    return named_copy(error, e, first, count);
  } catch (const CancelledError& e) {
    return named_copy(error, e, first, count);
  } catch (const TimeoutError& e) {
    return named_copy(error, e, first, count);
  } catch (const Error& e) {
    return named_copy(error, e, first, count);
  } catch (...) {
    return error;
  }
}

}  // namespace ferry::detail
