// SPDX-License-Identifier: BSD-3-Clause
// FERRY_WRAP: a main-program function shipped by value, compiled into a cached plugin
// (the C++ counterpart of loky's wrap_non_picklable_objects).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>
#include <ferry/detail/type_name.hpp>

namespace ferry {

/**
@brief How FERRY_WRAP bodies are compiled. Process-wide; see set_wrap_options().

Defaults: the compiler and optimisation flags ferry was built with; `$FERRY_CXX` overrides the
compiler and `$FERRY_WRAP_FLAGS` (whitespace-separated) adds flags; `$FERRY_CACHE_DIR`, else
`$XDG_CACHE_HOME/ferry`, else `~/.cache/ferry`, holds the plugins.
*/
struct WrapOptions {
  /// The C++ compiler; empty = $FERRY_CXX, else the one ferry was built with.
  std::filesystem::path compiler;
  /// Extra compile flags, e.g. {"-I/opt/mylib/include", "-DMODE=2", "-O3"}.
  std::vector<std::string> flags;
  /// Headers included before every wrapped body, spelt as in an #include: "<cmath>",
  /// "\"mylib/util.hpp\"". The prelude already has ferry, cereal and the common std headers.
  std::vector<std::string> includes;
  /// Link inputs: {"-lm", "-L/opt/mylib/lib", "-lmylib", "/path/libdep.so"}.
  std::vector<std::string> libraries;
  /// Where built plugins are cached; empty = the default above. A relative path is taken against
  /// the current directory whenever the options are read, as FERRY_CACHE_DIR is.
  std::filesystem::path cache_dir;
};

/** @brief Replaces the process-wide FERRY_WRAP options (later builds use them). Thread-safe. */
FERRY_API void set_wrap_options(WrapOptions options);
/** @brief The options in effect, defaults and environment applied. Thread-safe. */
FERRY_API WrapOptions wrap_options();

/**
@brief Starts compiling, in the background, every FERRY_WRAP function not built yet, so that the
first submission need not wait. Executor construction calls it too. Returns at once.
*/
FERRY_API void warm_up_wraps();

/** @brief Waits until every started wrap build ended; true if all succeeded in time. A timeout
too long for the clock (+infinity) waits as long as it takes; NaN throws std::invalid_argument. */
FERRY_API bool wait_for_wraps(std::chrono::duration<double> timeout = std::chrono::seconds(60));

namespace detail {

/// What FERRY_WRAP records about a function, keyed by its address.
struct WrapSite {
  const void* function;
  const char* name;
  const char* source;
  const char* file;
  int line;
  const char* signature;
  std::uint64_t fingerprint;
};

/// Records a site (the macro's static initialiser). Defined in libferry.
FERRY_API bool register_wrap(const WrapSite& site) noexcept;

template <auto Fn>
struct WrapSignature {
  static constexpr auto text = FunctionTraits<decltype(Fn)>::signature;
  static constexpr std::uint64_t fingerprint = fnv1a(text.view());
};

}  // namespace detail
}  // namespace ferry

#ifndef FERRY_DETAIL_CAT
#define FERRY_DETAIL_CAT2(a, b) a##b
#define FERRY_DETAIL_CAT(a, b) FERRY_DETAIL_CAT2(a, b)
#endif

/**
@brief Defines `name` as written, and ships it to workers by value.

The definition is compiled in the host as usual (the host can call it), and its text, name, file
and line are recorded. On first submission (or after warm_up_wraps()) the text is compiled with
the ferry plugin prelude into a shared library in the wrap cache, keyed by a hash of source,
compiler, flags and ferry ABI; then the function travels like any FERRY_TASK, by path and name.
The body may use only what it declares or includes itself (WrapOptions::includes): not the
host's globals, types or functions. Its statics live once per worker.

@code
FERRY_WRAP(twice,
int twice(int i, const std::vector<int>& args) { return 2 * i; })
...
ex.submit(twice, 21, std::vector<int>{}).get();  // 42
@endcode
*/
#define FERRY_WRAP(name, ...)                                                               \
  __VA_ARGS__                                                                               \
  [[maybe_unused]] static const bool FERRY_DETAIL_CAT(ferry_detail_wrap_, __COUNTER__) =    \
      ::ferry::detail::register_wrap(::ferry::detail::WrapSite{                             \
          reinterpret_cast<const void*>(&name), #name, #__VA_ARGS__, __FILE__, __LINE__,    \
          ::ferry::detail::WrapSignature<&name>::text.data,                                 \
          ::ferry::detail::WrapSignature<&name>::fingerprint});
