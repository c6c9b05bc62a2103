// SPDX-License-Identifier: BSD-3-Clause
// The entry point FERRY_TASK generates for a task (cereal's binary archive): decode the arguments,
// call, encode the result, report an exception by type and what(). Compiled into the plugin.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cxxabi.h>
#include <exception>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include <ferry/detail/streams.hpp>
#include <ferry/detail/task_record.hpp>
#include <ferry/detail/type_name.hpp>
#include <ferry/serialization.hpp>

namespace ferry::detail {

inline std::string demangle(const char* mangled) {
  int status = 0;
  char* out = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) return mangled;
  std::string s(out);
  std::free(out);  // NOLINT: __cxa_demangle allocates with malloc
  return s;
}

/// Writes "<type>\0<what>" of the exception being handled; works for `throw 42` too.
inline void describe_current_exception(std::streambuf& out) noexcept {
  try {
    std::string type = "unknown";
    if (const std::type_info* t = abi::__cxa_current_exception_type()) type = demangle(t->name());
    std::string what;
    try {
      throw;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
      what = "exception of type " + type + " (not derived from std::exception)";
    }
    out.sputn(type.data(), static_cast<std::streamsize>(type.size()));
    out.sputc('\0');
    out.sputn(what.data(), static_cast<std::streamsize>(what.size()));
  } catch (...) {
    // Out of memory while describing: the status code alone still reaches the host.
  }
}

template <class P, class T>
constexpr P&& forward_param(T& value) noexcept {
  return static_cast<P&&>(value);
}

/// A parameter that may be one of the chunk's shared trailing arguments: a reference parameter
/// binds to the shared value itself; a by-value or rvalue one gets a copy (in the item's own
/// slot), so one item cannot move from what the next one receives.
template <class P, class T>
P&& shared_param(T& own, T& shared, bool use_shared) {
  if constexpr (std::is_lvalue_reference_v<P>) {
    return static_cast<P&&>(use_shared ? shared : own);
  } else {
    if (use_shared) {
      if constexpr (std::is_copy_assignable_v<T>) {
        own = shared;
      } else {
        throw cereal::Exception("an argument shared by every item of a map is taken by value, "
                                "and its type cannot be copied");
      }
    }
    return static_cast<P&&>(own);
  }
}

/// Decodes the elements [from, to) of a tuple.
template <class Archive, class Tuple>
void decode_elements(Archive& ar, Tuple& t, std::size_t from, std::size_t to) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((I >= from && I < to ? static_cast<void>(ar(std::get<I>(t))) : static_cast<void>(0)), ...);
  }(std::make_index_sequence<std::tuple_size_v<Tuple>>{});
}

/// What both entry points need of Fn: the tuple its arguments are decoded into (decayed types),
/// and the call that hands each one over as the parameter type Fn declares.
template <auto Fn>
struct TaskCall {
  using Traits = FunctionTraits<decltype(Fn)>;
  using Result = std::remove_cvref_t<typename Traits::result>;
  using Args = typename Traits::decayed_params;
  static constexpr std::size_t arity = Traits::arity;

  static decltype(auto) call(Args& args) {
    using Params = typename Traits::params;
    return [&]<std::size_t... I>(std::index_sequence<I...>) -> decltype(auto) {
      return Fn(forward_param<std::tuple_element_t<I, Params>>(std::get<I>(args))...);
    }(std::make_index_sequence<arity>{});
  }

  /// As call(), the parameters from `first_shared` on taken from `shared`.
  static decltype(auto) call(Args& args, Args& shared, std::size_t first_shared) {
    using Params = typename Traits::params;
    return [&]<std::size_t... I>(std::index_sequence<I...>) -> decltype(auto) {
      return Fn(shared_param<std::tuple_element_t<I, Params>>(std::get<I>(args), std::get<I>(shared),
                                                              I >= first_shared)...);
    }(std::make_index_sequence<arity>{});
  }
};

/// The entry point FERRY_TASK exports for Fn: decode, call, encode, for each item of a chunk.
/// With shared trailing arguments (invoke_shared_shift), those come first, decoded once.
template <auto Fn>
void invoke(InvokeContext& ctx) noexcept {
  using Call = TaskCall<Fn>;
  using R = typename Call::Result;
  try {
    MemoryReader in(ctx.args, static_cast<std::size_t>(ctx.args_size));
    InputStreamLease is(&in);
    InputArchive iar(*is);
    OutputStreamLease os(ctx.result);
    OutputArchive oar(*os);
    const std::size_t shared = (ctx.flags >> invoke_shared_shift) & invoke_shared_mask;
    const std::size_t own = Call::arity - std::min(shared, Call::arity);
    typename Call::Args tail;
    if (shared) {
      ctx.failed_item = 0;
      ctx.status = InvokeStatus::decode_arguments_failed;
      if (shared > Call::arity)
        throw cereal::Exception(std::to_string(shared) + " arguments shared by every item, for a task of " +
                                std::to_string(Call::arity) + " parameters");
      decode_elements(iar, tail, own, Call::arity);
    }
    for (std::uint32_t item = 0; item < ctx.items; ++item) {
      ctx.failed_item = item;
      ctx.status = InvokeStatus::decode_arguments_failed;
      typename Call::Args args;
      if (shared) {
        decode_elements(iar, args, 0, own);
      } else if constexpr (Call::arity > 0) {
        std::apply([&](auto&... a) { iar(a...); }, args);
      }
      // Checked before the call: bytes left over mean the host's types are not the task's (a
      // struct of the same name built another way has the same fingerprint), and a task given
      // the values read so far ran with them, its side effects done, before the error.
      if (item + 1 == ctx.items && in.remaining() != 0)
        throw cereal::Exception("arguments carry " + std::to_string(in.remaining()) +
                                " trailing bytes: the host's argument types do not match the task");
      ctx.status = InvokeStatus::task_threw;
      if constexpr (std::is_void_v<R>) {
        if (shared) Call::call(args, tail, own);
        else Call::call(args);
      } else {
        R r = shared ? Call::call(args, tail, own) : Call::call(args);
        ctx.status = InvokeStatus::encode_result_failed;
        oar(r);
      }
      if (item + 1 == ctx.items) deliver_results(ctx);  // before `args` is destroyed
    }
    ctx.status = InvokeStatus::ok;
  } catch (...) {
    describe_current_exception(*ctx.error);
  }
}

template <auto Fn>
const void* function_address() noexcept {
  return reinterpret_cast<const void*>(Fn);  // NOLINT: identity of the task function
}

}  // namespace ferry::detail
