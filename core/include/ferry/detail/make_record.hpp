// SPDX-License-Identifier: BSD-3-Clause
// How FERRY_TASK builds a task's record at compile time: name check, signature, fingerprint and
// the entry points, placed in section ferry_tasks under the symbol ferry_task:<name>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <tuple>
#include <type_traits>

#include <ferry/detail/invoke.hpp>
#include <ferry/detail/layout.hpp>
#include <ferry/detail/task_record.hpp>
#include <ferry/detail/type_name.hpp>
#include <ferry/serialization.hpp>
#ifndef FERRY_DETAIL_NO_JSON_ENTRY
#include <ferry/detail/invoke_json.hpp>
#endif

namespace ferry::detail {

/// A call to this non-constexpr function inside a constant expression is how a bad task name is
/// reported: the compiler's error names it.
inline void ferry_task_name_must_be_nonempty_printable_without_spaces_quotes_backslashes_or_single_colons() {}

constexpr bool check_task_name(std::string_view n) {
  const bool ok = valid_task_name(n);
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
#else  // none either for a task whose types only cereal's binary archive carries (binary_only)
    if constexpr (has_json_entry<Fn>())
      r.header.invoke_json = &invoke_json<Fn>;
    else
      r.header.invoke_json = nullptr;
#endif
    r.header.address = &function_address<Fn>;
    r.header.layout = LayoutOf<decltype(Fn)>::fn;
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

}  // namespace ferry::detail

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
