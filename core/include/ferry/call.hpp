// SPDX-License-Identifier: BSD-3-Clause
// ferry::Call: a task with its arguments, encoded once (ExecutorOptions::initializer).
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <ferry/detail/args.hpp>
#include <ferry/detail/codec.hpp>
#include <ferry/detail/state.hpp>
#include <ferry/errors.hpp>
#include <ferry/serialization.hpp>
#include <ferry/task.hpp>
#include <ferry/task_ref.hpp>

namespace ferry {

namespace detail {
struct CallAccess;  // the pool's view of a Call (core/src)
}

/**
@brief A task and its arguments, to be run later: `ExecutorOptions::initializer`, run once in every
new worker before any task (concurrent.futures' and loky's `initializer=f, initargs=(...)`).

The task is named like a submission: a FERRY_TASK or FERRY_WRAP function (its signature checks the
arguments at compile time, as submit(fn, args...) does), a task name found in the plugin
directories ("name" or "plugin:name"; the arguments travel as their decayed types, C strings as
std::string, and the task must return void), or a TaskRef. The arguments are encoded once, here
(cereal's binary archive, as submit's), and kept as bytes: a Call is copyable and comparable (same
task, same encoded arguments), so ExecutorOptions still compare and get_reusable_executor reuses
an executor whose initializer is equal. A plain task name converts implicitly:
`.initializer = "init_flag"` keeps working. An empty name is no call.

Worker-local state is the use: a task that loads a model or opens a connection once per worker
into a variable of its plugin, which the tasks of that plugin then use (samples/initializer.cpp).
@throws SerializationError (encode_arguments) when an argument cannot be encoded.
@code
ferry::Executor ex({.max_workers = 4, .initializer = ferry::Call(load_model, "linear", 2.0)});
ferry::Executor by_name({.initializer = ferry::Call("load_model", "linear", 2.0)});
@endcode
*/
class Call {
 public:
  /// How the task is named.
  enum class Kind : std::uint8_t { none, function, name, ref };

  /// No call (an executor without an initializer).
  Call() noexcept = default;

  /// Task `task` ("name" or "plugin:name") of the plugin directories, with `args`. A null or empty
  /// name without arguments is no call.
  template <class... A>
  Call(const char* task, A&&... args)  // NOLINT: implicit, so that `initializer = "name"` works
      : Call(std::string_view(task ? task : ""), std::forward<A>(args)...) {}
  template <class... A>
  Call(const std::string& task, A&&... args)  // NOLINT: implicit on purpose
      : Call(std::string_view(task), std::forward<A>(args)...) {}
  template <class... A>
  Call(std::string_view task, A&&... args) {  // NOLINT: implicit on purpose
    if (task.empty()) {
      if constexpr (sizeof...(A) > 0) throw std::invalid_argument("ferry::Call: arguments without a task name");
      return;
    }
    kind_ = Kind::name;
    name_ = std::string(task);
    named<detail::wire_t<A>...>(std::forward<A>(args)...);
  }

  /// Task `ref.name` of the plugin at `ref.library`, with `args`.
  template <class... A>
  Call(const TaskRef& ref, A&&... args) {  // NOLINT: implicit on purpose
    kind_ = Kind::ref;
    name_ = ref.name;
    library_ = ref.library;
    named<detail::wire_t<A>...>(std::forward<A>(args)...);
  }

  /// A FERRY_TASK (or FERRY_WRAP) function with its arguments, checked against its parameters.
  template <class R, class... P, class... A>
  Call(R (*fn)(P...), A&&... args) {  // NOLINT: implicit on purpose
    static_assert(sizeof...(P) == sizeof...(A),
                  "ferry: Call(fn, args...) takes exactly one argument per parameter of fn");
    static_assert((std::is_convertible_v<A&&, std::remove_cvref_t<P>> && ...),
                  "ferry: an argument of Call cannot be converted implicitly to the matching "
                  "parameter type of the task, as a call of fn would refuse it: convert it yourself");
    detail::require_task_types<R (*)(P...)>();
    using Sig = detail::Signature<R, P...>;
    kind_ = Kind::function;
    function_ = reinterpret_cast<const void*>(fn);
    signature_ = Sig::text.view();
    fingerprint_ = Sig::fingerprint;
    layout_ = detail::LayoutOf<R (*)(P...)>::fn;
    encode<std::remove_cvref_t<P>...>(std::forward<A>(args)...);
  }

  /// Task `task` ("name" or "plugin:name" of the plugin directories) with its arguments as one
  /// JSON object, `{"value0": ..., "value1": ...}`, as Executor::submit_json takes them: the
  /// `ferry` command's `--initializer` and `--initarg`. The worker decodes them (cereal's JSON
  /// archive), which checks their number and types; the task may return a value (it is dropped).
  /// A FERRY_WRAP plugin has no JSON entry point: its worker fails the initializer.
  /// @throws std::invalid_argument for an empty task name, or arguments on more than one line (the
  /// worker reads one JSON line).
  static Call json(std::string_view task, std::string arguments) {
    if (task.empty()) throw std::invalid_argument("ferry::Call::json: no task name");
    Call c;
    c.kind_ = Kind::name;
    c.name_ = std::string(task);
    c.from_json(std::move(arguments));
    return c;
  }
  /// Task `ref.name` of the plugin at `ref.library`, with JSON arguments as above.
  static Call json(const TaskRef& ref, std::string arguments) {
    if (ref.name.empty()) throw std::invalid_argument("ferry::Call::json: no task name");
    Call c;
    c.kind_ = Kind::ref;
    c.name_ = ref.name;
    c.library_ = ref.library;
    c.from_json(std::move(arguments));
    return c;
  }

  /// True for no call.
  bool empty() const noexcept { return kind_ == Kind::none; }
  explicit operator bool() const noexcept { return !empty(); }
  Kind kind() const noexcept { return kind_; }
  /// The task name as given (by name or TaskRef); empty for a function (its plugin names it).
  const std::string& name() const noexcept { return name_; }
  /// The signature the worker checks, e.g. "void(string,f64)".
  std::string_view signature() const noexcept { return signature_; }
  /// The encoded arguments (cereal's binary archive, or a JSON line: is_json()), as the worker
  /// receives them.
  std::string_view arguments() const noexcept { return args_; }
  /// True for a Call::json: arguments() is JSON, and the worker checks them, not the compiler.
  bool is_json() const noexcept { return json_; }

  /// Same task (function, name or library and name, signature) and the same encoded arguments.
  bool operator==(const Call& o) const {
    // Not layout_: the signature decides it, and its address is one per shared object where
    // the instantiation is hidden.
    return kind_ == o.kind_ && function_ == o.function_ && name_ == o.name_ && library_ == o.library_ &&
           signature_ == o.signature_ && fingerprint_ == o.fingerprint_ && args_ == o.args_ && json_ == o.json_;
  }

 private:
  friend struct detail::CallAccess;

  void from_json(std::string arguments) {
    if (arguments.find_first_of("\r\n") != std::string::npos)
      throw std::invalid_argument("ferry::Call::json: the arguments must be one line of JSON");
    signature_ = "(JSON arguments)";
    fingerprint_ = 0;  // the worker's JSON decoding checks the types
    layout_ = nullptr;
    args_ = std::move(arguments);
    json_ = true;
  }

  template <class... W, class... A>
  void named(A&&... args) {
    using Sig = detail::Signature<void, W...>;
    signature_ = Sig::text.view();
    fingerprint_ = Sig::fingerprint;
    layout_ = &detail::signature_layout<void, W...>;
    encode<W...>(std::forward<A>(args)...);
  }

  template <class... W, class... A>
  void encode(A&&... args) {
    (detail::require_serializable<W>(), ...);
    detail::Buffer bytes;
    try {
      detail::encode_values(bytes, detail::as_param<W>(std::forward<A>(args))...);
    } catch (...) {
      // Whatever encoding throws, as in submit: a SerializationError naming the signature.
      throw SerializationError(SerializationStage::encode_arguments, std::string(signature_),
                               detail::current_exception_reason(), name_);
    }
    args_.assign(bytes.data(), bytes.size());
  }

  Kind kind_ = Kind::none;
  const void* function_ = nullptr;
  std::string name_;
  std::filesystem::path library_;
  std::string_view signature_;  // static text of detail::Signature
  std::uint64_t fingerprint_ = 0;
  detail::LayoutFn layout_ = nullptr;  // detail::signature_layout of the signature
  std::string args_;
  bool json_ = false;
};

}  // namespace ferry
