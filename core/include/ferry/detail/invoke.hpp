// SPDX-License-Identifier: BSD-3-Clause
// The entry point FERRY_TASK generates for a task (cereal's binary archive): decode the arguments,
// call, encode the result, report an exception by type and what(). Compiled into the plugin.
#pragma once

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
};

/// The entry point FERRY_TASK exports for Fn: decode, call, encode, for each item of a chunk.
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
    for (std::uint32_t item = 0; item < ctx.items; ++item) {
      ctx.failed_item = item;
      ctx.status = InvokeStatus::decode_arguments_failed;
      typename Call::Args args;
      if constexpr (Call::arity > 0) std::apply([&](auto&... a) { iar(a...); }, args);
      ctx.status = InvokeStatus::task_threw;
      if constexpr (std::is_void_v<R>) {
        Call::call(args);
      } else {
        R r = Call::call(args);
        ctx.status = InvokeStatus::encode_result_failed;
        oar(r);
      }
      if (item + 1 == ctx.items) {
        if (in.remaining() != 0) {
          ctx.status = InvokeStatus::decode_arguments_failed;
          throw cereal::Exception("arguments carry " + std::to_string(in.remaining()) +
                                  " trailing bytes: the host's argument types do not match the task");
        }
        deliver_results(ctx);  // before `args` is destroyed
      }
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
