// SPDX-License-Identifier: BSD-3-Clause
// Signature texts and fingerprints, value encoding round trips, Buffer semantics, serializability.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <cereal/types/memory.hpp>

#include <ferry/detail/codec.hpp>
#include <ferry/detail/invoke.hpp>
#include <ferry/detail/type_name.hpp>
#include <ferry/serialization.hpp>

#include "fuzz/results_fuzz.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

namespace {

using ferry::detail::Buffer;
using ferry::detail::Signature;

template <class R, class... Args>
std::string sig() {
  return std::string(Signature<R, Args...>::text.view());
}

template <class R, class... Args>
std::uint64_t fp() {
  return Signature<R, Args...>::fingerprint;
}

struct WithPointer {
  int* p = nullptr;
};
struct NoDefaultConstructor {
  explicit NoDefaultConstructor(int v) : value(v) {}
  int value;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value);
  }
};

using StringIntMap = std::map<std::string, int>;
using IntStringTuple = std::tuple<int, std::string>;

template <class T>
T sample();
template <>
int sample<int>() { return -123456789; }
template <>
std::string sample<std::string>() { return std::string("bytes \0 with a NUL and \xff", 25); }
template <>
std::vector<int> sample<std::vector<int>>() { return {1, -2, 3, 0x7fffffff, -0x7fffffff - 1}; }
template <>
StringIntMap sample<StringIntMap>() { return {{"one", 1}, {"", 0}, {"minus", -5}}; }
template <>
math::Vec2 sample<math::Vec2>() { return {1.5, -0.25}; }
template <>
IntStringTuple sample<IntStringTuple>() { return {42, "answer"}; }

std::string to_string(const Buffer& b) { return std::string(b.view()); }

}  // namespace

TYPE_TO_STRING(StringIntMap);
TYPE_TO_STRING(IntStringTuple);
TYPE_TO_STRING(math::Vec2);
TYPE_TO_STRING(std::vector<int>);
TYPE_TO_STRING(std::string);

// ---- signature texts -------------------------------------------------------------------------

TEST_CASE("Serialization.signature.arithmetic_types") {
  CHECK(sig<int, int>() == "i32(i32)");
  CHECK(sig<int, int, int>() == "i32(i32,i32)");
  CHECK(sig<long>() == "i64()");
  CHECK(sig<long long>() == "i64()");
  CHECK(sig<void, long, long long>() == "void(i64,i64)");
  CHECK(sig<unsigned, unsigned char, signed char, char>() == "u32(u8,i8,char)");
  CHECK(sig<std::size_t, short, unsigned short>() == "u64(i16,u16)");
  CHECK(sig<double, float, bool>() == "f64(f32,bool)");
  CHECK(sig<std::int64_t, std::uint64_t>() == "i64(u64)");
}

TEST_CASE("Serialization.signature.parameters_are_decayed") {
  CHECK(sig<double, const std::vector<double>&>() == "f64(vector<f64>)");
  CHECK(sig<double, std::vector<double>>() == "f64(vector<f64>)");
  CHECK(sig<const int, const int&, int&&, volatile int>() == "i32(i32,i32,i32)");
  CHECK(sig<std::string, const std::string&>() == "string(string)");
}

TEST_CASE("Serialization.signature.standard_containers") {
  CHECK(sig<std::string>() == "string()");
  CHECK(sig<void, std::map<std::string, int>>() == "void(map<string,i32>)");
  CHECK(sig<void, std::tuple<int, std::string, double>>() == "void(tuple<i32,string,f64>)");
  CHECK(sig<void, std::tuple<>>() == "void(tuple<>)");
  CHECK(sig<void, std::tuple<int>>() == "void(tuple<i32>)");
  CHECK(sig<void, std::array<int, 3>>() == "void(array<i32,3>)");
  CHECK(sig<void, std::array<double, 1024>>() == "void(array<f64,1024>)");
  CHECK(sig<void, std::array<char, 0>>() == "void(array<char,0>)");
  CHECK(sig<std::optional<int>>() == "optional<i32>()");
  CHECK(sig<void, std::pair<int, bool>>() == "void(pair<i32,bool>)");
  CHECK(sig<void, std::variant<int, std::string>>() == "void(variant<i32,string>)");
  CHECK(sig<void>() == "void()");
  CHECK(sig<std::vector<std::vector<int>>>() == "vector<vector<i32>>()");
  CHECK(sig<std::map<int, std::vector<std::pair<long, float>>>>() ==
        "map<i32,vector<pair<i64,f32>>>()");
}

TEST_CASE("Serialization.signature.user_types_use_their_qualified_name") {
  CHECK(sig<math::Vec2, math::Vec2, double>() == "math::Vec2(math::Vec2,f64)");
  CHECK(sig<std::vector<math::Vec2>>() == "vector<math::Vec2>()");
}

TEST_CASE("Serialization.signature.of_a_plugin_function") {
  using ferry::detail::FunctionTraits;
  CHECK(FunctionTraits<decltype(&square)>::signature.view() == "i32(i32)");
  CHECK(FunctionTraits<decltype(&add)>::signature.view() == "i32(i32,i32)");
  CHECK(FunctionTraits<decltype(&sum)>::signature.view() == "f64(vector<f64>)");
  CHECK(FunctionTraits<decltype(&greet)>::signature.view() == "string(string)");
  CHECK(FunctionTraits<decltype(&noop)>::signature.view() == "void()");
  CHECK(FunctionTraits<decltype(&sum)>::arity == 1);
}

TEST_CASE("Serialization.fingerprint.equal_for_equal_wire_types") {
  CHECK(fp<long, long>() == fp<long long, long long>());
  CHECK(fp<double, const std::vector<double>&>() == fp<double, std::vector<double>>());
  CHECK(fp<int, int>() == ferry::detail::fnv1a("i32(i32)"));
}

TEST_CASE("Serialization.fingerprint.differs_for_different_signatures") {
  CHECK(fp<int, int>() != fp<long, int>());
  CHECK(fp<int, int>() != fp<int, int, int>());
  CHECK(fp<int, int>() != fp<unsigned, int>());
  CHECK(fp<int, float>() != fp<int, double>());
  CHECK(fp<void, std::vector<int>>() != fp<void, std::vector<long>>());
  CHECK(fp<void, int, std::string>() != fp<void, std::string, int>());
}

TEST_CASE("Serialization.fingerprint.is_fnv1a_64") {
  // Published FNV-1a test vectors: the fingerprint is stable across compilers and runs.
  CHECK(ferry::detail::fnv1a("") == 0xcbf29ce484222325ull);
  CHECK(ferry::detail::fnv1a("a") == 0xaf63dc4c8601ec8cull);
  CHECK(ferry::detail::fnv1a("foobar") == 0x85944171f73967e8ull);
}

// ---- encode / decode -------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Serialization.encode_decode.round_trips", T, int, std::string, std::vector<int>,
                   StringIntMap, math::Vec2, IntStringTuple) {
  const T value = sample<T>();
  Buffer b;
  ferry::detail::encode_values(b, value);
  CHECK_FALSE(b.empty());
  CHECK(ferry::detail::decode_value<T>(b.view()) == value);

  SUBCASE("appends after existing bytes") {
    Buffer prefixed;
    prefixed.append("xyz", 3);
    ferry::detail::encode_values(prefixed, value);
    CHECK(prefixed.size() == b.size() + 3);
    CHECK(ferry::detail::decode_value<T>(prefixed.view().substr(3)) == value);
  }
  SUBCASE("trailing bytes are refused") {
    b.append("!", 1);
    CHECK_THROWS_AS(ferry::detail::decode_value<T>(b.view()), cereal::Exception);
  }
  SUBCASE("every truncation is refused") {
    for (std::size_t n = 0; n < b.size(); ++n) {
      CAPTURE(n);
      CHECK_THROWS_AS(ferry::detail::decode_value<T>(b.view().substr(0, n)), cereal::Exception);
    }
  }
}

TEST_CASE("Serialization.encode_values.writes_values_in_sequence") {
  Buffer b;
  ferry::detail::encode_values(b, 7, std::string("seven"), 7.5);
  // Binary archive layout: a 4-byte int, a u64 length and the characters, an 8-byte double.
  REQUIRE(b.size() == 4 + 8 + 5 + 8);
  std::int32_t i = 0;
  std::memcpy(&i, b.data(), 4);
  CHECK(i == 7);
  std::uint64_t len = 0;
  std::memcpy(&len, b.data() + 4, 8);
  CHECK(len == 5);
  CHECK(b.view().substr(12, 5) == "seven");
  CHECK(ferry::detail::decode_value<std::tuple<int, std::string, double>>(b.view()) ==
        std::make_tuple(7, std::string("seven"), 7.5));
}

namespace {
int counted_calls = 0;
int count_call(int x) {
  ++counted_calls;
  return x;
}
}  // namespace

TEST_CASE("Serialization.invoke.arguments_with_bytes_left_over_fail_before_the_task_runs") {
  // What a host sends when its struct of the task's name has a field more (same name, same
  // fingerprint): the task read its part, ran with it, and only then did the call fail.
  Buffer b;
  ferry::detail::encode_values(b, 7, 8);
  std::stringbuf result, error;
  ferry::detail::InvokeContext ctx{};
  ctx.args = b.data();
  ctx.args_size = b.size();
  ctx.items = 1;
  ctx.result = &result;
  ctx.error = &error;
  counted_calls = 0;
  ferry::detail::invoke<&count_call>(ctx);
  CHECK(ctx.status == ferry::detail::InvokeStatus::decode_arguments_failed);
  CHECK(error.str().find("4 trailing bytes") != std::string::npos);
  CHECK(counted_calls == 0);
}

TEST_CASE("Serialization.decode_value.refuses_bad_bytes") {
  SUBCASE("trailing bytes") {
    Buffer b;
    ferry::detail::encode_values(b, 1, 2);
    CHECK_THROWS_WITH_AS(ferry::detail::decode_value<int>(b.view()),
                         doctest::Contains("trailing bytes"), cereal::Exception);
  }
  SUBCASE("truncated int") {
    CHECK_THROWS_AS(ferry::detail::decode_value<int>(std::string_view("\x01\x02", 2)),
                    cereal::Exception);
  }
  SUBCASE("empty input") {
    CHECK_THROWS_AS(ferry::detail::decode_value<std::string>(std::string_view()),
                    cereal::Exception);
  }
  SUBCASE("string shorter than its length") {
    Buffer b;
    ferry::detail::encode_values(b, std::string("hello world"));
    CHECK_THROWS_AS(ferry::detail::decode_value<std::string>(b.view().substr(0, b.size() - 3)),
                    cereal::Exception);
  }
  SUBCASE("absurd vector length") {
    Buffer b;
    ferry::detail::encode_values(b, std::uint64_t{1} << 62);
    CHECK_THROWS(ferry::detail::decode_value<std::vector<int>>(b.view()));
  }
}

// ---- what a worker sends the host: container sizes backed by bytes ----------------------------

namespace {

/// Eight bytes of cereal's size tag claiming `n` elements, then `tail`.
std::string claimed(std::uint64_t n, std::string_view tail = {}) {
  Buffer b;
  ferry::detail::encode_values(b, n);
  return std::string(b.view()) + std::string(tail);
}

struct Empty {
  template <class Archive>
  void serialize(Archive&) {}
};

/// Loads only through cereal::BinaryInputArchive itself (no template).
struct OnlyBinary {
  int x = 0;
};
void save(cereal::BinaryOutputArchive& ar, const OnlyBinary& v) { ar(v.x); }
void load(cereal::BinaryInputArchive& ar, OnlyBinary& v) { ar(v.x); }

}  // namespace

TEST_CASE("Serialization.decode_value.a_few_bytes_cannot_make_the_host_allocate_gigabytes") {
  using ferry::detail::decode_value;
  // Each would have cereal resize (allocate and zero-fill) 4 to 16 GB before reading.
  const std::uint64_t billions = 4'000'000'000;
  CHECK_THROWS_WITH_AS(decode_value<std::vector<int>>(claimed(billions)),
                       doctest::Contains("a container of 4000000000 elements with 0 bytes left"),
                       cereal::Exception);
  CHECK_THROWS_AS(decode_value<std::string>(claimed(billions, "abc")), cereal::Exception);
  CHECK_THROWS_AS(decode_value<std::vector<std::string>>(claimed(billions)), cereal::Exception);
  CHECK_THROWS_AS(decode_value<std::deque<double>>(claimed(billions)), cereal::Exception);
  CHECK_THROWS_AS(decode_value<ferry::BytesView>(claimed(billions)), cereal::Exception);
  // Elements of a megabyte each, eight bytes claiming a thousand of them: nothing near a gigabyte
  // is allocated (the vector grows as elements are read, and the first one is not there).
  using Megabyte = std::array<char, 1 << 20>;
  rusage before{}, after{};
  ::getrusage(RUSAGE_SELF, &before);
  CHECK_THROWS_AS(decode_value<std::vector<Megabyte>>(claimed(1000)), cereal::Exception);
  CHECK_THROWS_AS(decode_value<std::deque<Megabyte>>(claimed(1000)), cereal::Exception);
  CHECK_THROWS_AS(decode_value<std::list<Megabyte>>(claimed(1000)), cereal::Exception);
  ::getrusage(RUSAGE_SELF, &after);
  CHECK(after.ru_maxrss - before.ru_maxrss < 256 * 1024);  // KiB: well under the 1 GB asked for
  // Numbers: all their bytes must follow.
  CHECK_THROWS_WITH_AS(decode_value<std::vector<double>>(claimed(10, std::string(79, 'x'))),
                       doctest::Contains("a vector of 10 numbers with 79 bytes left"), cereal::Exception);
  // Nested: the inner count is checked against what is left after it.
  Buffer nested;
  ferry::detail::encode_values(nested, std::uint64_t{1}, billions);
  CHECK_THROWS_AS(decode_value<std::vector<std::vector<int>>>(nested.view()), cereal::Exception);
}

TEST_CASE("Serialization.decode_value.replays_the_results_fuzz_corpus") {
  // Seeds and any input the results fuzzer ever failed on (tests/data/fuzz/results/crash-*): each
  // decodes or fails with cereal::Exception, into every type of tests/fuzz/results_fuzz.hpp.
  namespace fs = std::filesystem;
  std::size_t replayed = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(FERRY_TEST_DATA_DIR) / "fuzz" / "results")) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CAPTURE(entry.path().string());
    ferry::fuzz::results_one_input(bytes);
    ++replayed;
  }
  CHECK(replayed >= 5);
  // A bool is 0 or 1.
  CHECK(ferry::detail::decode_value<bool>(std::string_view("\x01", 1)));
  CHECK_THROWS_WITH_AS(ferry::detail::decode_value<bool>(std::string_view("\x02", 1)),
                       doctest::Contains("a bool of value 2"), cereal::Exception);
  CHECK_THROWS_AS(ferry::detail::decode_value<std::vector<bool>>(claimed(2, "\x01\x07")), cereal::Exception);
}

namespace {

/// A tree: each node's children are nodes.
struct Node {
  std::vector<Node> kids;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(kids);
  }
};

/// A linked list's node with named members, as users write one.
struct ListNode {
  int value = 0;
  std::unique_ptr<ListNode> next;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(cereal::make_nvp("value", value), cereal::make_nvp("next", next));
  }
};

/// Every key in one bucket.
struct OneBucket {
  std::size_t operator()(int) const noexcept { return 0; }
};

}  // namespace

TEST_CASE("Serialization.decode_value.what_a_hostile_result_cannot_do") {
  using ferry::detail::decode_value;
  SUBCASE("point two shared_ptrs at one object (of whatever type)") {
    auto one = std::make_shared<int>(7);
    Buffer shared;
    ferry::detail::encode_values(shared, std::make_tuple(one, one));
    CHECK_THROWS_WITH_AS((decode_value<std::tuple<std::shared_ptr<int>, std::shared_ptr<int>>>(shared.view())),
                         doctest::Contains("pointers share an object"), cereal::Exception);
    Buffer distinct;
    ferry::detail::encode_values(distinct, std::make_tuple(std::make_shared<int>(1), std::make_shared<int>(2)));
    auto [a, b] = decode_value<std::tuple<std::shared_ptr<int>, std::shared_ptr<int>>>(distinct.view());
    CHECK((*a == 1 && *b == 2));
  }
  SUBCASE("nest deeper than the decoding thread's stack") {
    // A chain of nodes, each with one child: eight bytes a level.
    auto chain = [](int levels) {
      Buffer b;
      for (int i = 0; i < levels; ++i) ferry::detail::encode_values(b, std::uint64_t{1});
      ferry::detail::encode_values(b, std::uint64_t{0});
      return b;
    };
    CHECK_NOTHROW(decode_value<Node>(chain(50).view()));
    CHECK_THROWS_WITH_AS(decode_value<Node>(chain(100'000).view()), doctest::Contains("levels deep"),
                         cereal::Exception);
  }
  SUBCASE("nest deeper than the limit through a list of named nodes") {
    // The limit counts a node once: not its members' names, its pointer and cereal's wrapper of
    // it (six levels a node: 85 nodes were too many).
    auto list = [](int nodes) {
      ListNode head;
      ListNode* at = &head;
      for (int i = 1; i < nodes; ++i) {
        at->next = std::make_unique<ListNode>();
        at->next->value = i;
        at = at->next.get();
      }
      Buffer b;
      ferry::detail::encode_values(b, head);
      return b;
    };
    ListNode back = decode_value<ListNode>(list(500).view());
    int count = 0;
    for (const ListNode* at = &back; at; at = at->next.get()) CHECK(at->value == count++);
    CHECK(count == 500);
    CHECK_THROWS_WITH_AS(decode_value<ListNode>(list(600).view()), doctest::Contains("levels deep"),
                         cereal::Exception);
  }
  SUBCASE("collide keys in one bucket") {
    std::unordered_set<int, OneBucket> keys;
    for (int i = 0; i < 600; ++i) keys.insert(i);
    Buffer b;
    ferry::detail::encode_values(b, keys);
    CHECK_THROWS_WITH_AS((decode_value<std::unordered_set<int, OneBucket>>(b.view())),
                         doctest::Contains("collide in one bucket"), cereal::Exception);
    // Equal keys of a multiset share a bucket honestly.
    Buffer equal;
    std::unordered_multiset<int> zeros;
    for (int i = 0; i < 1000; ++i) zeros.insert(0);
    ferry::detail::encode_values(equal, zeros);
    CHECK(decode_value<std::unordered_multiset<int>>(equal.view()).count(0) == 1000);
  }
  SUBCASE("take far more memory than its bytes") {
    // An empty optional is one byte; a 1 MiB array in memory.
    using Big = std::optional<std::array<char, 1 << 20>>;
    Buffer b;
    ferry::detail::encode_values(b, std::vector<Big>(200));
    CHECK_THROWS_WITH_AS(decode_value<std::vector<Big>>(b.view()), doctest::Contains("far more memory"),
                         cereal::Exception);
  }
  SUBCASE("keep a BytesView pointing into its message") {
    Buffer b;
    ferry::detail::encode_values(b, std::vector<ferry::BytesView>{ferry::BytesView(std::string_view("inside"))});
    auto views = decode_value<std::vector<ferry::BytesView>>(b.view());
    REQUIRE(views.size() == 1);
    CHECK(views[0].view() == "inside");
    CHECK((views[0].data() < b.data() || views[0].data() >= b.data() + b.size()));  // its own copy
  }
}

TEST_CASE("Serialization.decode_value.honest_containers_still_decode") {
  using ferry::detail::decode_value;
  Buffer b;
  ferry::detail::encode_values(b, std::vector<std::string>{"a", "", "ccc"});
  CHECK(decode_value<std::vector<std::string>>(b.view()) == std::vector<std::string>{"a", "", "ccc"});
  Buffer empty;
  ferry::detail::encode_values(empty, std::vector<int>{}, std::string());
  CHECK(decode_value<std::tuple<std::vector<int>, std::string>>(empty.view()) ==
        std::tuple<std::vector<int>, std::string>{});
  Buffer m;
  ferry::detail::encode_values(m, std::map<std::string, std::vector<char>>{{"k", {'x', 'y'}}});
  CHECK(decode_value<std::map<std::string, std::vector<char>>>(m.view()).at("k").size() == 2);
  // Elements that take no bytes: up to unbacked_elements of them.
  Buffer few;
  ferry::detail::encode_values(few, std::vector<Empty>(ferry::detail::unbacked_elements));
  CHECK(decode_value<std::vector<Empty>>(few.view()).size() == ferry::detail::unbacked_elements);
  Buffer many;
  ferry::detail::encode_values(many, std::vector<Empty>(ferry::detail::unbacked_elements + 1));
  CHECK_THROWS_AS(decode_value<std::vector<Empty>>(many.view()), cereal::Exception);
  // A map's chunk of strings (read value by value) and a whole result: a forged count is a
  // SerializationError from get(), not gigabytes.
  auto chunk = ferry::detail::make_state<std::vector<std::string>>(2);
  Buffer forged;
  ferry::detail::encode_values(forged, std::string("ok"), std::uint64_t{4'000'000'000});
  chunk->set_payload(std::move(forged));
  CHECK_THROWS_WITH_AS(chunk->get(), doctest::Contains("bytes left"), ferry::SerializationError);
  auto whole = ferry::detail::make_state<std::string>(0);
  Buffer claim;
  ferry::detail::encode_values(claim, std::uint64_t{4'000'000'000});
  whole->set_payload(std::move(claim));
  CHECK_THROWS_WITH_AS(whole->get(), doctest::Contains("bytes left"), ferry::SerializationError);
  // A type that loads only through cereal's own binary archive: decoded with it, unchecked.
  static_assert(std::is_same_v<ferry::detail::ResultArchive<OnlyBinary>, cereal::BinaryInputArchive>);
  static_assert(std::is_same_v<ferry::detail::ResultArchive<int>, ferry::detail::BoundedInputArchive>);
  Buffer ob;
  ferry::detail::encode_values(ob, OnlyBinary{41});
  CHECK(decode_value<OnlyBinary>(ob.view()).x == 41);
}

// ---- Buffer ----------------------------------------------------------------------------------

TEST_CASE("Serialization.Buffer.copy_is_deep") {
  Buffer a;
  a.append("hello", 5);
  Buffer b(a);
  CHECK(to_string(b) == "hello");
  CHECK(b.data() != a.data());
  b.data()[0] = 'j';
  CHECK(to_string(a) == "hello");
  CHECK(to_string(b) == "jello");

  Buffer c;
  c.append("a much longer previous content", 30);
  c = a;
  CHECK(to_string(c) == "hello");
  const Buffer& alias = c;
  c = alias;  // self copy-assign keeps the bytes
  CHECK(to_string(c) == "hello");

  Buffer empty, copy(empty);
  CHECK(copy.empty());
  CHECK(copy.size() == 0);
}

TEST_CASE("Serialization.Buffer.move_leaves_source_empty") {
  Buffer a;
  a.append("payload", 7);
  const char* storage = a.data();
  Buffer b(std::move(a));
  CHECK(to_string(b) == "payload");
  CHECK(b.data() == storage);  // no copy
  CHECK(a.empty());
  CHECK(a.capacity() == 0);
  CHECK(a.data() == nullptr);

  Buffer c;
  c.append("old", 3);
  c = std::move(b);
  CHECK(to_string(c) == "payload");
  CHECK(c.data() == storage);
  CHECK(b.empty());
  CHECK(b.capacity() == 0);

  // A moved-from buffer is usable again.
  b.append("again", 5);
  CHECK(to_string(b) == "again");
}

TEST_CASE("Serialization.Buffer.append_and_growth") {
  Buffer b;
  CHECK(b.empty());
  CHECK(b.capacity() == 0);
  b.append("", 0);
  CHECK(b.capacity() == 0);
  std::string expected;
  for (int i = 0; i < 1000; ++i) {
    std::string piece = std::to_string(i) + ",";
    b.append(piece.data(), piece.size());
    expected += piece;
  }
  CHECK(to_string(b) == expected);
  CHECK(b.capacity() >= b.size());
  b.clear();
  CHECK(b.empty());
  CHECK(b.capacity() > 0);  // clear keeps the storage
}

TEST_CASE("Serialization.Buffer.consume_removes_the_front") {
  Buffer b;
  b.append("0123456789", 10);
  b.consume(0);
  CHECK(to_string(b) == "0123456789");
  b.consume(3);
  CHECK(to_string(b) == "3456789");
  b.consume(6);
  CHECK(to_string(b) == "9");
  b.consume(1);
  CHECK(b.empty());
  b.append("abc", 3);
  b.consume(100);
  CHECK(b.empty());
}

TEST_CASE("Serialization.Buffer.resize_and_reserve") {
  Buffer b(10);
  CHECK(b.size() == 10);
  std::memcpy(b.data(), "abcdefghij", 10);
  b.resize(4);
  CHECK(to_string(b) == "abcd");
  b.resize(100000);
  CHECK(b.size() == 100000);
  CHECK(b.view().substr(0, 4) == "abcd");  // growing keeps the content
  b.reserve(10);
  CHECK(b.capacity() >= 100000);
  b.resize(2);
  b.shrink_to(1024);
  CHECK(b.capacity() <= 1024);
  CHECK(to_string(b) == "ab");
  b.resize(2000);
  b.shrink_to(1024);  // size above the limit: nothing is dropped
  CHECK(b.size() == 2000);
  CHECK(b.view().substr(0, 2) == "ab");
}

TEST_CASE("Serialization.MemoryReader.reads_in_place") {
  const std::string bytes = "in place";
  ferry::detail::MemoryReader r(bytes.data(), bytes.size());
  CHECK(r.remaining() == 8);
  char out[3];
  CHECK(r.sgetn(out, 3) == 3);
  CHECK(std::string(out, 3) == "in ");
  CHECK(r.consumed() == 3);
  CHECK(r.remaining() == 5);
}

// ---- BytesView --------------------------------------------------------------------------------

TEST_CASE("Serialization.BytesView.encodes_like_vector_and_string") {
  const std::string text = "bytes, not copied";
  const std::vector<char> vec(text.begin(), text.end());
  ferry::detail::Buffer as_view, as_vector, as_string;
  ferry::detail::encode_values(as_view, ferry::BytesView(text));
  ferry::detail::encode_values(as_vector, vec);
  ferry::detail::encode_values(as_string, text);
  CHECK(as_view.view() == as_vector.view());
  CHECK(as_view.view() == as_string.view());
  // And each decodes the other's bytes.
  CHECK(ferry::detail::decode_value<std::string>(as_view.view()) == text);
  CHECK(ferry::detail::decode_value<ferry::BytesView>(as_vector.view()).view() == text);
}

TEST_CASE("Serialization.BytesView.decodes_in_place") {
  ferry::detail::Buffer b;
  ferry::detail::encode_values(b, 7, ferry::BytesView(std::string_view("payload")), 9);
  ferry::detail::MemoryReader reader(b.data(), b.size());
  std::istream is(&reader);
  ferry::InputArchive ar(is);
  int before = 0, after = 0;
  ferry::BytesView v;
  ar(before, v, after);
  CHECK(before == 7);
  CHECK(after == 9);
  CHECK(v.view() == "payload");
  // It points into the bytes it was decoded from.
  CHECK(v.data() >= b.data());
  CHECK(v.data() + v.size() <= b.data() + b.size());
}

TEST_CASE("Serialization.BytesView.copies_when_the_archive_reads_another_stream") {
  ferry::detail::Buffer b;
  ferry::detail::encode_values(b, ferry::BytesView(std::string_view("elsewhere")));
  std::istringstream other(std::string(b.view()));
  const std::string unrelated = "some other reader, current on this thread";
  ferry::detail::MemoryReader current(unrelated.data(), unrelated.size());
  ferry::InputArchive ar(other);
  ferry::BytesView v;
  ar(v);
  CHECK(v.view() == "elsewhere");
  CHECK(current.consumed() == 0);  // the unrelated reader was not touched
}

TEST_CASE("Serialization.BytesView.refuses_truncated_bytes") {
  ferry::detail::Buffer b;
  ferry::detail::encode_values(b, ferry::BytesView(std::string_view("truncated")));
  CHECK_THROWS_AS(ferry::detail::decode_value<ferry::BytesView>(b.view().substr(0, b.size() - 1)),
                  cereal::Exception);
}

TEST_CASE("Serialization.BytesView.converts_from_byte_ranges") {
  std::vector<unsigned char> u = {1, 2, 3};
  std::array<std::byte, 2> a{std::byte{4}, std::byte{5}};
  CHECK(ferry::BytesView(u).size() == 3);
  CHECK(ferry::BytesView(a).size() == 2);
  CHECK(ferry::BytesView("abc").size() == 3);  // a literal: without its terminating zero
  // The constraint is spelt with std::ranges::data/size, not <ranges>' concepts (issue 11): it
  // must still take exactly the contiguous ranges of 1-byte trivially copyable elements.
  static_assert(std::is_constructible_v<ferry::BytesView, std::span<const std::byte>>);
  static_assert(std::is_constructible_v<ferry::BytesView, const std::vector<char>&>);
  static_assert(!std::is_constructible_v<ferry::BytesView, const std::vector<int>&>);
  static_assert(!std::is_constructible_v<ferry::BytesView, const std::list<char>&>);
  static_assert(!std::is_constructible_v<ferry::BytesView, const std::deque<char>&>);
  ferry::BytesView owned = ferry::BytesView::owning("kept");
  ferry::BytesView copy = owned;
  owned = ferry::BytesView();
  CHECK(copy.view() == "kept");
}

// ---- is_serializable_v ------------------------------------------------------------------------

TEST_CASE("Serialization.is_serializable.accepts_travelling_types") {
  CHECK(ferry::is_serializable_v<int>);
  CHECK(ferry::is_serializable_v<std::string>);
  CHECK(ferry::is_serializable_v<const std::string&>);
  CHECK(ferry::is_serializable_v<std::vector<int>>);
  CHECK(ferry::is_serializable_v<StringIntMap>);
  CHECK(ferry::is_serializable_v<math::Vec2>);
  CHECK(ferry::is_serializable_v<IntStringTuple>);
  CHECK(ferry::is_serializable_v<std::optional<std::vector<math::Vec2>>>);
  CHECK(ferry::is_serializable_v<void>);
}

TEST_CASE("Serialization.is_serializable.refuses_other_types") {
  CHECK_FALSE(ferry::is_serializable_v<WithPointer>);
  CHECK_FALSE(ferry::is_serializable_v<NoDefaultConstructor>);
}

namespace {
template <class T>
std::string raw_and_archived(T v) {
  ferry::detail::Encoder raw, archived;
  raw.arithmetic(v);
  archived(v);
  Buffer a = raw.take(), b = archived.take();
  return a.view() == b.view() ? "same" : "differ";
}
}  // namespace

TEST_CASE("Serialization.numbers.raw_encoding_is_cereals") {
  // A map over numbers encodes them without the archive (Encoder::arithmetic): the bytes must
  // stay exactly what cereal writes, or a worker would read other values.
  CHECK(raw_and_archived<char>('x') == "same");
  CHECK(raw_and_archived<std::int8_t>(-7) == "same");
  CHECK(raw_and_archived<std::uint16_t>(65000) == "same");
  CHECK(raw_and_archived<int>(-123456) == "same");
  CHECK(raw_and_archived<std::uint64_t>(0xfedcba9876543210ull) == "same");
  CHECK(raw_and_archived<float>(3.25f) == "same");
  CHECK(raw_and_archived<double>(-1e300) == "same");
}

TEST_CASE("Serialization.map_chunk.numbers_decode_at_once_and_a_wrong_size_is_an_error") {
  // A chunk of 3 doubles, as a worker writes them.
  Buffer chunk;
  ferry::detail::encode_values(chunk, 1.5, -2.0, 1e-9);
  auto s = ferry::detail::make_state<std::vector<double>>(3);
  s->set_payload(Buffer(chunk));
  CHECK(s->get() == std::vector<double>{1.5, -2.0, 1e-9});
  // A byte missing, or one too many: the values are read one by one, and that fails.
  for (std::size_t size : {chunk.size() - 1, chunk.size() + 1}) {
    Buffer wrong(size);
    std::memcpy(wrong.data(), chunk.data(), std::min(size, chunk.size()));
    auto bad = ferry::detail::make_state<std::vector<double>>(3);
    bad->set_payload(std::move(wrong));
    CHECK_THROWS_AS(bad->get(), ferry::SerializationError);
  }
  // An empty chunk of numbers.
  auto none = ferry::detail::make_state<std::vector<int>>(0);
  Buffer empty_vector;
  ferry::detail::encode_values(empty_vector, std::vector<int>{});
  none->set_payload(std::move(empty_vector));
  CHECK(none->get().empty());
}
