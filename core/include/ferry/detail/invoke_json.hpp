// SPDX-License-Identifier: BSD-3-Clause
// The JSON entry point FERRY_TASK generates for a task (`ferry run`, Executor::submit_json): one
// JSON object of arguments per line in, one per result out, through ferry's JSON archive.
// FERRY_WRAP builds define FERRY_DETAIL_NO_JSON_ENTRY and never include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <ferry/detail/invoke.hpp>
#include <ferry/detail/json_archive.hpp>

namespace ferry::detail {

/// The arguments of a JSON call must be exactly {"value0": ..., "value<n-1>": ...}: the archive
/// would read members by position and ignore extra ones.
inline void check_json_arguments(const JsonValue& args, std::size_t arity) {
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
  JsonDocument doc;
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
