// SPDX-License-Identifier: BSD-3-Clause
// Compile-time canonical type names, task signatures and their fingerprints.
#pragma once

#include <array>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace ferry::detail {

/// A string usable as a constant expression and as a non-type template argument.
template <std::size_t N>
struct FixedString {
  char data[N + 1]{};

  constexpr FixedString() = default;
  constexpr FixedString(const char (&s)[N + 1]) {  // NOLINT: implicit on purpose
    for (std::size_t i = 0; i < N; ++i) data[i] = s[i];
  }
  constexpr explicit FixedString(std::string_view s) {
    for (std::size_t i = 0; i < N && i < s.size(); ++i) data[i] = s[i];
  }
  static constexpr std::size_t size() { return N; }
  constexpr std::string_view view() const { return {data, N}; }
};
template <std::size_t N>
FixedString(const char (&)[N]) -> FixedString<N - 1>;

template <std::size_t A, std::size_t B>
constexpr FixedString<A + B> operator+(const FixedString<A>& a, const FixedString<B>& b) {
  FixedString<A + B> r;
  for (std::size_t i = 0; i < A; ++i) r.data[i] = a.data[i];
  for (std::size_t i = 0; i < B; ++i) r.data[A + i] = b.data[i];
  return r;
}
template <std::size_t A, std::size_t B>
constexpr auto operator+(const FixedString<A>& a, const char (&b)[B]) {
  return a + FixedString<B - 1>(b);
}
template <std::size_t A, std::size_t B>
constexpr auto operator+(const char (&a)[A], const FixedString<B>& b) {
  return FixedString<A - 1>(a) + b;
}

constexpr std::size_t decimal_digits(std::size_t v) {
  std::size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}
template <std::size_t V>
constexpr auto decimal() {
  FixedString<decimal_digits(V)> r;
  std::size_t v = V;
  for (std::size_t i = decimal_digits(V); i > 0; --i) {
    r.data[i - 1] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  return r;
}

/// The compiler's own spelling of T, cut out of __PRETTY_FUNCTION__. Used for user types only.
template <class T>
constexpr std::string_view pretty_type_name() {
  std::string_view p = __PRETTY_FUNCTION__;
#if defined(__clang__)
  constexpr std::string_view open = "[T = ";
#else
  constexpr std::string_view open = "[with T = ";
#endif
  auto begin = p.find(open) + open.size();
  auto end = p.find(';', begin);
  if (end == std::string_view::npos) end = p.rfind(']');
  return p.substr(begin, end - begin);
}

// Each specialisation below names a type ferry knows; its `parts` are the types its name is made
// of (a vector's element, a map's key and value), which detail/layout.hpp looks through for user
// types. The primary template is a user type's: named by the compiler, marked `user`.
template <class T, class = void>
struct TypeName {
  static constexpr std::string_view pretty = pretty_type_name<T>();
  static constexpr auto value = FixedString<pretty.size()>(pretty);
  static constexpr bool user = true;
};

template <class... Ts>
constexpr auto join_type_names() {
  if constexpr (sizeof...(Ts) == 0) {
    return FixedString<0>{};
  } else {
    return []<class First, class... Rest>(std::type_identity<First>, std::type_identity<Rest>...) {
      return (TypeName<First>::value + ... + ("," + TypeName<Rest>::value));
    }(std::type_identity<Ts>{}...);
  }
}

// Arithmetic types are named by what cereal's binary archive writes for them, so that `long` and
// `long long` (both 8 bytes here) share a fingerprint and a plugin built by another compiler matches.
template <class T>
struct TypeName<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr auto make() {
    if constexpr (std::is_same_v<T, bool>) {
      return FixedString("bool");
    } else if constexpr (std::is_same_v<T, char>) {
      return FixedString("char");
    } else if constexpr (std::is_floating_point_v<T>) {
      return "f" + decimal<sizeof(T) * 8>();
    } else if constexpr (std::is_signed_v<T>) {
      return "i" + decimal<sizeof(T) * 8>();
    } else {
      return "u" + decimal<sizeof(T) * 8>();
    }
  }
  static constexpr auto value = make();
};
template <>
struct TypeName<void> {
  static constexpr auto value = FixedString("void");
};
template <class C, class Tr, class A>
struct TypeName<std::basic_string<C, Tr, A>> {
  static constexpr auto value = "basic_string<" + TypeName<C>::value + ">";
};
template <class A>
struct TypeName<std::basic_string<char, std::char_traits<char>, A>> {
  static constexpr auto value = FixedString("string");
};

#define FERRY_DETAIL_NAME_1(tmpl, label)                                   \
  template <class T, class... Rest>                                        \
  struct TypeName<tmpl<T, Rest...>> {                                      \
    static constexpr auto value = label "<" + TypeName<T>::value + ">";    \
    using parts = std::tuple<T>;                                           \
  };
#define FERRY_DETAIL_NAME_SINGLE(tmpl, label)                              \
  template <class T>                                                       \
  struct TypeName<tmpl<T>> {                                               \
    static constexpr auto value = label "<" + TypeName<T>::value + ">";    \
    using parts = std::tuple<T>;                                           \
  };
#define FERRY_DETAIL_NAME_2(tmpl, label)                                                        \
  template <class K, class V, class... Rest>                                                    \
  struct TypeName<tmpl<K, V, Rest...>> {                                                        \
    static constexpr auto value = label "<" + TypeName<K>::value + "," + TypeName<V>::value + ">"; \
    using parts = std::tuple<K, V>;                                                             \
  };
FERRY_DETAIL_NAME_1(std::vector, "vector")
FERRY_DETAIL_NAME_1(std::deque, "deque")
FERRY_DETAIL_NAME_1(std::list, "list")
FERRY_DETAIL_NAME_1(std::set, "set")
FERRY_DETAIL_NAME_1(std::multiset, "multiset")
FERRY_DETAIL_NAME_1(std::unordered_set, "unordered_set")
FERRY_DETAIL_NAME_SINGLE(std::optional, "optional")
FERRY_DETAIL_NAME_SINGLE(std::complex, "complex")
FERRY_DETAIL_NAME_2(std::map, "map")
FERRY_DETAIL_NAME_2(std::multimap, "multimap")
FERRY_DETAIL_NAME_2(std::unordered_map, "unordered_map")
#undef FERRY_DETAIL_NAME_1
#undef FERRY_DETAIL_NAME_SINGLE
#undef FERRY_DETAIL_NAME_2

template <class A, class B>
struct TypeName<std::pair<A, B>> {
  static constexpr auto value = "pair<" + TypeName<A>::value + "," + TypeName<B>::value + ">";
  using parts = std::tuple<A, B>;
};
template <class... Ts>
struct TypeName<std::tuple<Ts...>> {
  static constexpr auto value = "tuple<" + join_type_names<Ts...>() + ">";
  using parts = std::tuple<Ts...>;
};
template <class... Ts>
struct TypeName<std::variant<Ts...>> {
  static constexpr auto value = "variant<" + join_type_names<Ts...>() + ">";
  using parts = std::tuple<Ts...>;
};
template <class T, std::size_t N>
struct TypeName<std::array<T, N>> {
  static constexpr auto value = "array<" + TypeName<T>::value + "," + decimal<N>() + ">";
  using parts = std::tuple<T>;
};

/// Canonical signature text of a task, e.g. "f64(vector<f64>)": parameters are decayed, because a
/// `const std::vector<double>&` parameter and a `std::vector<double>` argument travel the same way.
template <class R, class... Args>
constexpr auto signature_text() {
  return TypeName<std::remove_cvref_t<R>>::value + "(" +
         join_type_names<std::remove_cvref_t<Args>...>() + ")";
}

/// FNV-1a, 64 bits: stable across compilers and runs.
constexpr std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 14695981039346656037ull) {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

template <class F>
struct FunctionTraits;
template <class R, class... Args>
struct FunctionTraits<R (*)(Args...)> {
  using result = R;
  using params = std::tuple<Args...>;
  using decayed_params = std::tuple<std::remove_cvref_t<Args>...>;
  static constexpr std::size_t arity = sizeof...(Args);
  static constexpr auto signature = signature_text<R, Args...>();
};
template <class R, class... Args>
struct FunctionTraits<R (*)(Args...) noexcept> : FunctionTraits<R (*)(Args...)> {};

/// The signature and fingerprint a submission with these types expects.
template <class R, class... Args>
struct Signature {
  static constexpr auto text = signature_text<R, Args...>();
  static constexpr std::uint64_t fingerprint = fnv1a(text.view());
};

}  // namespace ferry::detail
