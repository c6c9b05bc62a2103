// SPDX-License-Identifier: BSD-3-Clause
// A signature's layout: what each user type in it serializes, member by member. The signature
// names a user type by its name only, so a host and a plugin built from two versions of a header
// agree on it; the layout is how they find out they should not. It is text made at run time, once
// per signature and process, by running each user type's own save (or serialize) over a
// default-constructed value (not for a type marked ferry::layout_by_name, written by name only)
// with an archive that writes down what it is given instead of bytes:
// "geo::Point{x:f64,y:f64}" (member names where the type gives them, cereal's NVPs), and a user's
// enum on another type than `int` as the type cereal writes for it: "geo::Mode{=u16}". The host
// sends its text with a task's reference; the worker compares it with the plugin's (the record's
// `layout`) before the first call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <cereal/cereal.hpp>
#include <cereal/details/traits.hpp>
#include <cereal/types/base_class.hpp>

#include <ferry/detail/task_record.hpp>
#include <ferry/detail/type_name.hpp>
#include <ferry/serialization.hpp>  // layout_by_name

namespace ferry::detail {
class LayoutWriter;
template <class U>
void describe_user_type(LayoutWriter& w);
template <class E>
void describe_enum(LayoutWriter& w);
}  // namespace ferry::detail

namespace cereal {
class FerryLayoutArchive;
}

// Called from cereal's namespace, with the archive a class of namespace cereal as cereal's own
// are, so that a user type's non-member serialize or save is found the way cereal finds it: by
// argument-dependent lookup in the type's namespace, or declared in namespace cereal itself
// (after this header, as users do for types they do not own).
namespace cereal::ferry_layout {
template <class A, class T>
void serialize_with(A& ar, T& t) {
  CEREAL_SERIALIZE_FUNCTION_NAME(ar, t);
}
template <class A, class T>
void save_with(A& ar, const T& t) {
  CEREAL_SAVE_FUNCTION_NAME(ar, t);
}
template <class A, class T>
auto save_minimal_with(const A& ar, const T& t) {
  return CEREAL_SAVE_MINIMAL_FUNCTION_NAME(ar, t);
}
}  // namespace cereal::ferry_layout

namespace ferry::detail {

/// A type of the user's: one whose name the compiler gives (TypeName's primary template), not one
/// of std's, cereal's or ferry's own (those are named only: their serialization is the library's,
/// the same on both sides).
template <class T>
constexpr bool is_user_named() {
  if constexpr (!requires { TypeName<T>::user; }) {
    return false;
  } else {
    constexpr std::string_view n = TypeName<T>::value.view();
    return !(n.starts_with("std::") || n.starts_with("cereal::") || n.starts_with("ferry::"));
  }
}

/// A user type whose members a layout describes: a class of the user's.
template <class T>
constexpr bool is_layout_user_type() {
  return std::is_class_v<T> && is_user_named<T>();
}

/// A user's enum a layout describes: cereal writes its underlying type, which the signature does
/// not name. Not one on `int` (an enum class's own): the layouts of signatures holding only those
/// are what plugins built before wrote, and a host and a plugin disagree on them only when the
/// other side says another type, which it then describes.
template <class T>
constexpr bool is_layout_enum() {
  if constexpr (std::is_enum_v<T>) {
    return is_user_named<T>() && !std::is_same_v<std::underlying_type_t<T>, int>;
  } else {
    return false;
  }
}

/// True when T's name is the same whoever compiled it: ferry's own names (`f64`, `vector<...>`)
/// of parts that are, a user type's or an enum's qualified name. Not a library type that ferry
/// names by the compiler's spelling (`std::chrono::duration<long int, ...>` to g++, `<long, ...>`
/// to clang; `std::unique_ptr<T>`): a layout writes such a member as `_`, not compared, so that a
/// plugin built by another compiler than the host's still matches.
template <class T>
constexpr bool has_portable_name() {
  if constexpr (requires { TypeName<T>::user; }) {
    return !std::is_class_v<T> || is_layout_user_type<T>();
  } else if constexpr (requires { typename TypeName<T>::parts; }) {
    return []<class... P>(std::type_identity<std::tuple<P...>>) {
      return (has_portable_name<std::remove_cv_t<P>>() && ...);
    }(std::type_identity<typename TypeName<T>::parts>{});
  } else {
    return true;
  }
}

/// Collects the user types reachable from some types and writes each one's members, in the order
/// met (each once: a type that holds a vector of itself is written once).
class LayoutWriter {
 public:
  /// Longest layout sent as text; a longer one is sent as its hash ("#" and 16 hex digits).
  static constexpr std::size_t max_text = 4096;
  /// User types described at most; those past it are named by their signature text only.
  static constexpr std::size_t max_types = 256;

  /// Notes T: a user type is queued, a type ferry names is looked through (its `parts`).
  template <class T>
  void note() {
    if constexpr (is_layout_user_type<T>() || is_layout_enum<T>()) {
      const void* id = &tag<T>;
      for (const Pending& p : queue_)
        if (p.id == id) return;
      if (queue_.size() < max_types) {
        if constexpr (std::is_enum_v<T>)
          queue_.push_back({id, &describe_enum<T>});
        else
          queue_.push_back({id, &describe_user_type<T>});
      }
    } else if constexpr (requires { typename TypeName<T>::parts; }) {
      note_parts(std::type_identity<typename TypeName<T>::parts>{});
    }
  }

  /// Describes the queued types (and those their members bring); "" when there were none.
  std::string finish() {
    for (std::size_t i = 0; i < queue_.size(); ++i) {
      if (i) text_ += ';';
      queue_[i].describe(*this);
    }
    if (text_.size() <= max_text) return std::move(text_);
    std::uint64_t h = fnv1a(text_);
    std::string hashed = "#";
    for (int shift = 60; shift >= 0; shift -= 4) hashed += "0123456789abcdef"[(h >> shift) & 15];
    return hashed;
  }

  std::string& text() noexcept { return text_; }

 private:
  template <class... P>
  void note_parts(std::type_identity<std::tuple<P...>>) {
    (note<std::remove_cv_t<P>>(), ...);
  }

  template <class T>
  static constexpr char tag = 0;
  struct Pending {
    const void* id;
    void (*describe)(LayoutWriter&);
  };
  std::vector<Pending> queue_;
  std::string text_;
};

}  // namespace ferry::detail

/// The archive a user type's save runs with: it writes down the type (and name) of each item
/// it is given, never a value, and looks no deeper (a member's own type is described on its own).
class cereal::FerryLayoutArchive {
  using LayoutWriter = ferry::detail::LayoutWriter;
  template <class T>
  using TypeName = ferry::detail::TypeName<T>;

 public:
  // As cereal's output archives say, for code that asks.
  using is_loading = std::false_type;
  using is_saving = std::true_type;

  explicit FerryLayoutArchive(LayoutWriter& w) noexcept : w_(w) {}
  FerryLayoutArchive(const FerryLayoutArchive&) = delete;
  FerryLayoutArchive& operator=(const FerryLayoutArchive&) = delete;

  template <class... T>
  FerryLayoutArchive& operator()(T&&... items) {
    (entry(items), ...);
    return *this;
  }
  template <class T>
  FerryLayoutArchive& operator&(T&& item) {
    entry(item);
    return *this;
  }
  template <class T>
  FerryLayoutArchive& operator<<(T&& item) {
    entry(item);
    return *this;
  }

  /// A member of type T, as the signature would name it (`_` for a library type whose name
  /// depends on the compiler: ferry::detail::has_portable_name).
  template <class T>
  void member() {
    using M = std::remove_cvref_t<T>;
    if constexpr (ferry::detail::has_portable_name<M>())
      w_.text() += TypeName<M>::value.view();
    else
      w_.text() += '_';
    w_.note<M>();
  }

 private:
  void next() {
    if (!first_) w_.text() += ',';
    first_ = false;
  }
  template <class M>
  void entry(const cereal::NameValuePair<M>& nvp) {
    next();
    w_.text() += nvp.name ? nvp.name : "";
    w_.text() += ':';
    member<M>();
  }
  template <class M>
  void entry(const cereal::SizeTag<M>&) {
    next();
    w_.text() += "size";
  }
  template <class M>
  void entry(const cereal::BinaryData<M>&) {
    next();
    w_.text() += "bytes";
  }
  template <class B>
  void entry(const cereal::base_class<B>&) {
    next();
    w_.text() += "base ";
    member<B>();
  }
  template <class B>
  void entry(const cereal::virtual_base_class<B>&) {
    next();
    w_.text() += "virtual base ";
    member<B>();
  }
  template <class M>
  void entry(const cereal::DeferredData<M>&) {
    next();
    member<M>();
  }
  template <class T>
  void entry(const T&) {
    next();
    member<T>();
  }

  LayoutWriter& w_;
  bool first_ = true;
};

namespace ferry::detail {

using LayoutArchive = cereal::FerryLayoutArchive;

/// "Name{members}": U's members as its save (serialize, save_minimal) gives them to the archive,
/// over a default-constructed U (every type that travels is default-constructible). "{versioned}"
/// for a type with a class version, whose load may read either side's data; "{named}" for one
/// the user marked ferry::layout_by_name (its save is never run here); "{?}" when U has no
/// save this archive can call, or its constructor or save threw.
template <class U>
void describe_user_type(LayoutWriter& w) {
  using A = LayoutArchive;
  namespace tr = cereal::traits;
  std::string& text = w.text();
  text += TypeName<U>::value.view();
  text += '{';
  if constexpr (tr::has_member_versioned_serialize<U, A>::value ||
                tr::has_non_member_versioned_serialize<U, A>::value ||
                tr::has_member_versioned_save<U, A>::value ||
                tr::has_non_member_versioned_save<U, A>::value ||
                tr::has_member_versioned_save_minimal<U, A>::value ||
                tr::has_non_member_versioned_save_minimal<U, A>::value) {
    text += "versioned";  // first: marking it layout_by_name changes nothing (its save never runs)
  } else if constexpr (layout_by_name<U>::value) {
    text += "named";
  } else if constexpr (std::is_default_constructible_v<U>) {
    const std::size_t mark = text.size();
    try {
      auto value = std::make_unique<U>();
      A ar(w);
      if constexpr (tr::has_member_serialize<U, A>::value) {
        cereal::access::member_serialize(ar, *value);
      } else if constexpr (tr::has_non_member_serialize<U, A>::value) {
        cereal::ferry_layout::serialize_with(ar, *value);
      } else if constexpr (tr::has_member_save<U, A>::value) {
        cereal::access::member_save(ar, std::as_const(*value));
      } else if constexpr (tr::has_non_member_save<U, A>::value) {
        cereal::ferry_layout::save_with(ar, std::as_const(*value));
      } else if constexpr (tr::has_member_save_minimal<U, A>::value) {
        text += '=';
        ar.member<decltype(cereal::access::member_save_minimal(ar, std::as_const(*value)))>();
      } else if constexpr (tr::has_non_member_save_minimal<U, A>::value) {
        text += '=';
        ar.member<decltype(cereal::ferry_layout::save_minimal_with(ar, std::as_const(*value)))>();
      } else {
        text += '?';
      }
    } catch (...) {
      text.resize(mark);
      text += '?';
    }
  } else {
    text += '?';
  }
  text += '}';
}

/// "Name{=u16}": an enum, written as its underlying type (as a save_minimal's value is).
template <class E>
void describe_enum(LayoutWriter& w) {
  std::string& text = w.text();
  text += TypeName<E>::value.view();
  text += "{=";
  text += TypeName<std::underlying_type_t<E>>::value.view();
  text += '}';
}

/// The layout of the types T...: "" when none of them holds a user type.
template <class... T>
std::string layout_text() {
  LayoutWriter w;
  (w.note<std::remove_cvref_t<T>>(), ...);
  return w.finish();
}

/// The layout of signature R(Args...) (types decayed, as in its text), made once per process.
template <class R, class... Args>
const char* signature_layout() noexcept {
  static const std::string text = [] {
    try {
      return layout_text<R, Args...>();
    } catch (...) {  // out of memory: a text no plugin's matches, so the call fails, said why
      return std::string("(layout unknown)");
    }
  }();
  return text.c_str();
}

template <class F>
struct LayoutOf;
template <class R, class... Args>
struct LayoutOf<R (*)(Args...)> {
  static constexpr LayoutFn fn = &signature_layout<std::remove_cvref_t<R>, std::remove_cvref_t<Args>...>;
};
template <class R, class... Args>
struct LayoutOf<R (*)(Args...) noexcept> : LayoutOf<R (*)(Args...)> {};

}  // namespace ferry::detail
