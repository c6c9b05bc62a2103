// SPDX-License-Identifier: BSD-3-Clause
// The JSON entry point FERRY_TASK generates for a task (`ferry run`, Executor::submit_json): one
// JSON object of arguments per line in, one per result out, through ferry's JSON archive.
// FERRY_WRAP builds define FERRY_DETAIL_NO_JSON_ENTRY and never include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <ferry/detail/invoke.hpp>
#include <ferry/detail/json_archive.hpp>
#include <ferry/detail/layout.hpp>  // is_layout_user_type
#include <ferry/serialization.hpp>   // binary_only

namespace ferry::detail {

template <class T, bool Reading>
constexpr bool has_json_form();

/// Whether a smart pointer's object has a JSON form (the pointer itself has, as cereal writes it).
template <class T, bool Reading>
struct PointeeHasJsonForm : std::true_type {};
template <class T, class D, bool Reading>
struct PointeeHasJsonForm<std::unique_ptr<T, D>, Reading>
    : std::bool_constant<has_json_form<std::remove_cv_t<T>, Reading>()> {};
template <class T, bool Reading>
struct PointeeHasJsonForm<std::shared_ptr<T>, Reading>
    : std::bool_constant<has_json_form<std::remove_cv_t<T>, Reading>()> {};

/// False when T, read (an argument) or written (a result), is seen to have no JSON form without
/// instantiating its serialization: marked ferry::binary_only, a user class whose load (save)
/// cereal's binary archive finds and the JSON entry point's archive does not (written for the
/// binary archive itself), or a standard type ferry names (its `parts`) or a smart pointer holding
/// one. Only on that evidence: a class neither archive finds anything for (an abstract base
/// written through its registered derived types, a type built by load_and_construct) keeps its
/// JSON entry point, as before. What a template serialize does inside is not seen (binary_only).
template <class T, bool Reading>
constexpr bool has_json_form() {
  namespace tr = cereal::traits;
  if constexpr (binary_only<T>::value) {
    return false;
  } else if constexpr (requires { typename TypeName<T>::parts; }) {
    return []<class... P>(std::type_identity<std::tuple<P...>>) {
      return (has_json_form<std::remove_cv_t<P>, Reading>() && ...);
    }(std::type_identity<typename TypeName<T>::parts>{});
  } else if constexpr (is_layout_user_type<T>()) {
    if constexpr (Reading)
      return !tr::is_input_serializable<T, cereal::BinaryInputArchive>::value ||
             tr::is_input_serializable<T, JsonTextInputArchive>::value;
    else
      return !tr::is_output_serializable<T, cereal::BinaryOutputArchive>::value ||
             tr::is_output_serializable<T, JsonOutputArchive>::value;
  } else {
    return PointeeHasJsonForm<T, Reading>::value;
  }
}

/// Whether task Fn gets a JSON entry point: its arguments can be read from JSON and its result
/// written as JSON.
template <auto Fn>
constexpr bool has_json_entry() {
  using Traits = FunctionTraits<decltype(Fn)>;
  using R = std::remove_cvref_t<typename Traits::result>;
  return []<class... A>(std::type_identity<std::tuple<A...>>) {
    return (has_json_form<A, true>() && ...);
  }(std::type_identity<typename Traits::decayed_params>{}) && (std::is_void_v<R> || has_json_form<R, false>());
}

/// The arguments of a JSON call must be exactly {"value0": ..., "value<n-1>": ...}: the archive
/// would read members by position and ignore extra ones. `each_name(name)` calls `name` with each
/// member's name in order: the first that names no argument is the error, then their number.
template <class EachName>
void check_json_argument_names(std::size_t arity, EachName&& each_name) {
  std::size_t given = 0;
  std::vector<bool> seen(arity);
  each_name([&](std::string_view key) {
    std::size_t i = 0;
    while (i < arity && key != "value" + std::to_string(i)) ++i;
    if (i == arity)
      throw JsonError({}, "unexpected argument \"" + std::string(key) + "\": the task takes " +
                              std::to_string(arity) + " (value0..value" +
                              std::to_string(arity == 0 ? 0 : arity - 1) + ")");
    // Which of two would count depends on the reader (json_name_given_twice).
    if (seen[i]) throw JsonError({}, "argument \"" + std::string(key) + "\" is given twice");
    seen[i] = true;
    ++given;
  });
  if (given != arity)
    throw JsonError({}, "the task takes " + std::to_string(arity) + " arguments, " + std::to_string(given) +
                            " given");
}
inline std::string json_arguments_not_an_object(const std::string& found) {
  return "arguments must be a JSON object {\"value0\": ...}, found " + found;
}
/// check_json_argument_names on a document.
inline void check_json_arguments(const JsonValue& args, std::size_t arity) {
  if (!args.IsObject()) throw JsonError({}, json_arguments_not_an_object(describe_json(args)));
  check_json_argument_names(arity, [&](auto&& name) {
    for (auto m = args.MemberBegin(); m != args.MemberEnd(); ++m)
      name(std::string_view(m->name.GetString(), m->name.GetStringLength()));
  });
}
/// check_json_argument_names on a text check_json_text accepted. Each value is skipped once: no
/// table of ends for it.
inline void check_json_arguments(std::string_view text, std::size_t arity) {
  JsonText json(text, JsonText::no_end_table);
  const std::size_t top = json.skip_space(0);
  if (json.at(top) != '{') throw JsonError({}, json_arguments_not_an_object(json.describe(top)));
  std::string scratch;
  check_json_argument_names(arity, [&](auto&& name) {
    for (std::size_t p = json.first(top); !json.closes(p); p = json.after(p, true)) name(json.name(p, scratch));
  });
}

/// Reads the checked arguments by name from `ar`, a JSON input archive. A value that does not fit
/// names its argument, the parameter's type and what was found.
template <class Archive, class Tuple, std::size_t... I>
void read_json_argument_values(Archive& ar, Tuple& args, std::index_sequence<I...>) {
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

/// Decodes one line of arguments into `args`: checked once (its nesting bounded before RapidJSON's
/// recursive parser runs, then parsed without a document), its members checked, then read by name
/// where the line lies (JsonTextInputArchive). A document cost about ten times a line of small
/// numbers; this holds the line (and a copy of it only when a number had to be written again).
template <class Tuple, std::size_t... I>
void read_json_arguments(std::string_view line, Tuple& args, std::index_sequence<I...> arguments) {
  constexpr std::size_t arity = sizeof...(I);
  if (arity == 0 && line.find_first_not_of(" \t\r") == std::string_view::npos) return;  // no arguments
  std::string fixed, error;
  if (!check_json_text(line, fixed, error)) throw JsonError({}, "arguments are not valid JSON: " + error);
  check_json_arguments(line, arity);
  JsonTextInputArchive ar(line);
  read_json_argument_values(ar, args, arguments);
}

/// The JSON entry point: each item is one line holding a JSON object {"value0": arg0, ...}; each
/// result is one line {"value0": result} ({} for void), written compactly by ferry's JSON archive
/// (detail/json_archive.hpp). With invoke_keep_going, a failing item yields {"error": {"type",
/// "message", "stage"}} and the next items still run.
template <auto Fn>
void invoke_json(InvokeContext& ctx) noexcept {
  using Call = TaskCall<Fn>;
  using R = typename Call::Result;
  try {
    std::string_view rest(ctx.args, static_cast<std::size_t>(ctx.args_size));
    JsonStringBuffer out;  // one line, written to ctx.result once it is whole
    for (std::uint32_t item = 0; item < ctx.items; ++item) {
      auto nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
      ctx.failed_item = item;
      out.Clear();
      try {
        ctx.status = InvokeStatus::decode_arguments_failed;
        typename Call::Args args;
        read_json_arguments(line, args, std::make_index_sequence<Call::arity>{});
        ctx.status = InvokeStatus::task_threw;
        if constexpr (std::is_void_v<R>) {
          Call::call(args);
          out.Put('{');
          out.Put('}');
        } else {
          R r = Call::call(args);
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
        const char* stage = invoke_stage_name(ctx.status);
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

}  // namespace ferry::detail
