// SPDX-License-Identifier: BSD-3-Clause
// Plugin side: FERRY_TASK / FERRY_TASK_AS, the exported task record, and TaskRef (header-only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cxxabi.h>
#include <exception>
#include <filesystem>
#include <istream>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include <ferry/detail/json_archive.hpp>
#include <ferry/detail/type_name.hpp>
#include <ferry/serialization.hpp>

namespace ferry {

/**
@brief Names a task by plugin library and task name, for submission without linking the plugin.

@code
auto f = ex->submit<int>(ferry::TaskRef{.library = "plugins/libmath.so", .name = "square"}, 7);
@endcode
*/
struct TaskRef {
  std::filesystem::path library;  ///< path of the plugin shared library
  std::string name;               ///< task name as given to FERRY_TASK / FERRY_TASK_AS
};

namespace detail {

/// Bumped whenever the record layout or the invoke contract below changes (2: InvokeContext::deliver).
inline constexpr std::uint32_t plugin_abi_version = 2;
inline constexpr std::string_view task_symbol_prefix = "ferry_task:";
inline constexpr std::string_view task_section = "ferry_tasks";
inline constexpr char task_record_magic[8] = {'F', 'E', 'R', 'R', 'Y', 'T', 'K', '\0'};

enum class InvokeStatus : std::uint32_t {
  ok = 0,
  decode_arguments_failed = 1,
  task_threw = 2,
  encode_result_failed = 3,
};

/// InvokeContext::flags.
inline constexpr std::uint32_t invoke_keep_going = 1;  ///< JSON: an item's error is its result

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

/// Fixed prefix of every exported record. The text (name, NUL, signature, NUL) follows it. All
/// fields but the two pointers are plain bytes, so the manifest can be read from the file without
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
};
static_assert(sizeof(TaskRecordHeader) == 56);

template <std::size_t TextSize>
struct TaskRecord {
  TaskRecordHeader header;
  char text[TextSize];
};

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

/// The entry point FERRY_TASK exports for Fn: decode, call, encode, for each item of a chunk.
template <auto Fn>
void invoke(InvokeContext& ctx) noexcept {
  using Traits = FunctionTraits<decltype(Fn)>;
  using R = std::remove_cvref_t<typename Traits::result>;
  using Args = typename Traits::decayed_params;
  using Params = typename Traits::params;
  try {
    MemoryReader in(ctx.args, static_cast<std::size_t>(ctx.args_size));
    InputStreamLease is(&in);
    InputArchive iar(*is);
    OutputStreamLease os(ctx.result);
    OutputArchive oar(*os);
    for (std::uint32_t item = 0; item < ctx.items; ++item) {
      ctx.failed_item = item;
      ctx.status = InvokeStatus::decode_arguments_failed;
      Args args;
      if constexpr (Traits::arity > 0) std::apply([&](auto&... a) { iar(a...); }, args);
      ctx.status = InvokeStatus::task_threw;
      auto call = [&]<std::size_t... I>(std::index_sequence<I...>) -> decltype(auto) {
        return Fn(forward_param<std::tuple_element_t<I, Params>>(std::get<I>(args))...);
      };
      if constexpr (std::is_void_v<R>) {
        call(std::make_index_sequence<Traits::arity>{});
      } else {
        R r = call(std::make_index_sequence<Traits::arity>{});
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

/// The arguments of a JSON call must be exactly {"value0": ..., "value<n-1>": ...}: the archive
/// would read members by position and ignore extra ones.
inline void check_json_arguments(const json::Value& args, std::size_t arity) {
  if (!args.IsObject())
    throw JsonError({}, "arguments must be a JSON object {\"value0\": ...}, found " + describe_json(args));
  for (auto m = args.MemberBegin(); m != args.MemberEnd(); ++m) {
    std::string_view key(m->name.GetString(), m->name.GetStringLength());
    bool known = false;
    for (std::size_t i = 0; i < arity && !known; ++i) known = key == "value" + std::to_string(i);
    if (!known)
      throw JsonError({}, "unexpected argument \"" + std::string(key) + "\": the task takes " +
                              std::to_string(arity) + " (value0..value" +
                              std::to_string(arity == 0 ? 0 : arity - 1) + ")");
  }
  if (args.MemberCount() != arity)
    throw JsonError({}, "the task takes " + std::to_string(arity) + " arguments, " +
                            std::to_string(args.MemberCount()) + " given");
}

/// Decodes one line of arguments into `args`: parsed once (its nesting bounded before RapidJSON's
/// recursive parser runs), checked, then read by name. A value that does not fit names its
/// argument, the parameter's type and what was found.
template <class Tuple, std::size_t... I>
void read_json_arguments(std::string_view line, Tuple& args, std::index_sequence<I...>) {
  constexpr std::size_t arity = sizeof...(I);
  if (arity == 0 && line.find_first_not_of(" \t\r") == std::string_view::npos) return;  // no arguments
  json::Document doc;
  std::string error;
  if (!parse_json(line, doc, error)) throw JsonError({}, "arguments are not valid JSON: " + error);
  check_json_arguments(doc, arity);
  JsonInputArchive ar(doc);
  [[maybe_unused]] auto read = [&]<std::size_t N>(std::integral_constant<std::size_t, N>) {
    const std::string name = "value" + std::to_string(N);
    try {
      ar(cereal::make_nvp(name.c_str(), std::get<N>(args)));
    } catch (const JsonError& e) {
      // e.where() starts with this argument's name: say which argument, of which type, instead.
      std::string inner = e.where().size() > name.size() ? e.where().substr(name.size()) : "";
      throw JsonError({}, "argument " + std::to_string(N + 1) + " (" +
                                        std::string(json_type_label<std::tuple_element_t<N, Tuple>>()) +
                                        ")" + (inner.empty() ? "" : ", at " + name + inner) + ": " +
                                        e.problem());
    }
  };
  (read(std::integral_constant<std::size_t, I>{}), ...);
}

/// The JSON entry point: each item is one line holding a JSON object {"value0": arg0, ...}; each
/// result is one line {"value0": result} ({} for void), written compactly by ferry's JSON archive
/// (detail/json_archive.hpp). With invoke_keep_going, a failing item yields {"error": {"type",
/// "message", "stage"}} and the next items still run.
template <auto Fn>
void invoke_json(InvokeContext& ctx) noexcept {
  using Traits = FunctionTraits<decltype(Fn)>;
  using R = std::remove_cvref_t<typename Traits::result>;
  using Args = typename Traits::decayed_params;
  using Params = typename Traits::params;
  try {
    std::string_view rest(ctx.args, static_cast<std::size_t>(ctx.args_size));
    json::StringBuffer out;  // one line, written to ctx.result once it is whole
    for (std::uint32_t item = 0; item < ctx.items; ++item) {
      auto nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
      ctx.failed_item = item;
      out.Clear();
      try {
        ctx.status = InvokeStatus::decode_arguments_failed;
        Args args;
        read_json_arguments(line, args, std::make_index_sequence<Traits::arity>{});
        ctx.status = InvokeStatus::task_threw;
        auto call = [&]<std::size_t... I>(std::index_sequence<I...>) -> decltype(auto) {
          return Fn(forward_param<std::tuple_element_t<I, Params>>(std::get<I>(args))...);
        };
        if constexpr (std::is_void_v<R>) {
          call(std::make_index_sequence<Traits::arity>{});
          out.Put('{');
          out.Put('}');
        } else {
          R r = call(std::make_index_sequence<Traits::arity>{});
          ctx.status = InvokeStatus::encode_result_failed;
          JsonOutputArchive oar(out);
          oar(r);
          oar.finish();
        }
        out.Put('\n');
        ctx.result->sputn(out.GetString(), static_cast<std::streamsize>(out.GetSize()));
        if (item + 1 == ctx.items) deliver_results(ctx);  // before `args` is destroyed
      } catch (...) {
        if (!(ctx.flags & invoke_keep_going)) throw;
        std::stringbuf described;
        describe_current_exception(described);
        std::string d = described.str();
        auto nul = d.find('\0');
        const char* stage = ctx.status == InvokeStatus::task_threw ? "task"
                            : ctx.status == InvokeStatus::decode_arguments_failed
                                ? "decode_arguments"
                                : "encode_result";
        out.Clear();
        write_json_error(out, std::string_view(d).substr(0, nul),
                         nul == std::string::npos ? std::string_view() : std::string_view(d).substr(nul + 1),
                         stage);
        out.Put('\n');
        ctx.result->sputn(out.GetString(), static_cast<std::streamsize>(out.GetSize()));
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

/// A call to this non-constexpr function inside a constant expression is how a bad task name is
/// reported: the compiler's error names it.
inline void ferry_task_name_must_be_nonempty_printable_without_spaces_quotes_backslashes_or_single_colons() {}

constexpr bool check_task_name(std::string_view n) {
  bool ok = !n.empty();
  for (std::size_t i = 0; i < n.size(); ++i) {
    char c = n[i];
    if (c <= ' ' || c == '"' || c == '\\' || c == 127) ok = false;
    if (c == ':') {
      bool pair = (i + 1 < n.size() && n[i + 1] == ':') || (i > 0 && n[i - 1] == ':');
      if (!pair) ok = false;
    }
  }
  if (!ok) ferry_task_name_must_be_nonempty_printable_without_spaces_quotes_backslashes_or_single_colons();
  return ok;
}

constexpr std::size_t round_up8(std::size_t n) { return (n + 7) / 8 * 8; }

template <auto Fn, FixedString Name>
struct TaskRecordFor {
  using Traits = FunctionTraits<decltype(Fn)>;
  static_assert(!std::is_reference_v<typename Traits::result> &&
                    !std::is_pointer_v<typename Traits::result>,
                "ferry: a task must return a value (a pointer or reference into the worker's "
                "memory means nothing to the host); return by value or void");
  static constexpr auto signature = Traits::signature;
  static constexpr std::size_t text_size = round_up8(Name.size() + signature.size() + 2);
  using type = TaskRecord<text_size>;

  static constexpr type make() {
    type r{};
    for (std::size_t i = 0; i < 8; ++i) r.header.magic[i] = task_record_magic[i];
    r.header.abi = plugin_abi_version;
    r.header.record_size = static_cast<std::uint32_t>(sizeof(type));
    r.header.fingerprint = fnv1a(signature.view());
    r.header.name_size = static_cast<std::uint32_t>(Name.size());
    r.header.signature_size = static_cast<std::uint32_t>(signature.size());
    r.header.invoke = &invoke<Fn>;
#ifdef FERRY_DETAIL_NO_JSON_ENTRY  // FERRY_WRAP builds: submitted by function only (see wrap_compiler)
    r.header.invoke_json = nullptr;
#else
    r.header.invoke_json = &invoke_json<Fn>;
#endif
    r.header.address = &function_address<Fn>;
    std::size_t at = 0;
    for (char c : Name.view()) r.text[at++] = c;
    r.text[at++] = '\0';
    for (char c : signature.view()) r.text[at++] = c;
    return r;
  }
};

template <class F>
constexpr void require_task_types() {
  using Traits = FunctionTraits<F>;
  []<class... A>(std::type_identity<std::tuple<A...>>) {
    (require_serializable<A>(), ...);
  }(std::type_identity<typename Traits::decayed_params>{});
  require_serializable<std::remove_cvref_t<typename Traits::result>>();
}

}  // namespace detail
}  // namespace ferry

#define FERRY_DETAIL_CAT2(a, b) a##b
#define FERRY_DETAIL_CAT(a, b) FERRY_DETAIL_CAT2(a, b)

// GCC writes an asm label verbatim into the assembly, where a name with ':' must be quoted; clang
// quotes it itself.
#if defined(__clang__)
#define FERRY_DETAIL_TASK_SYMBOL(name) __asm__("ferry_task:" name)
#else
#define FERRY_DETAIL_TASK_SYMBOL(name) __asm__("\"ferry_task:" name "\"")
#endif

#define FERRY_DETAIL_TASK_RECORD(fn, name, var)                                                 \
  static_assert(::ferry::detail::check_task_name(name), "invalid ferry task name");            \
  static_assert((::ferry::detail::require_task_types<decltype(&fn)>(), true));                \
  extern __attribute__((visibility("default"), used, section("ferry_tasks"))) constinit const \
      ::ferry::detail::TaskRecordFor<&fn, name>::type var FERRY_DETAIL_TASK_SYMBOL(name) =    \
          ::ferry::detail::TaskRecordFor<&fn, name>::make()

/**
@brief Registers `fn` as task `name` of this shared library.

Exports one record under the C symbol `ferry_task:<name>` in section `ferry_tasks` (listable with
Boost.DLL's `library_info(path).symbols("ferry_tasks")` without loading the library). The record
holds the name, the signature text, its fingerprint and the ferry plugin ABI version. Use at
namespace scope, once per name and library. Overloaded functions need a cast-free wrapper.

@code
double sum(const std::vector<double>& v);
FERRY_TASK_AS(sum, "math.sum");
@endcode
*/
#define FERRY_TASK_AS(fn, name) \
  FERRY_DETAIL_TASK_RECORD(fn, name, FERRY_DETAIL_CAT(ferry_detail_task_record_, __COUNTER__))

/** @brief Registers `fn` as a task named after the function (`FERRY_TASK(square)` → "square"). */
#define FERRY_TASK(fn) FERRY_TASK_AS(fn, #fn)

/**
@brief Marks a plugin function as exported, for hosts that link the plugin and submit it by
function. Plugins are built with hidden visibility, so without it the host cannot link to it.
*/
#define FERRY_EXPORT __attribute__((visibility("default")))
