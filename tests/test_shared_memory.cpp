// SPDX-License-Identifier: BSD-3-Clause
// Large arguments and results travel through shared memory (memfd + SCM_RIGHTS): correct at every
// size around the threshold, both ways, after a crash, and without leaking descriptors.
#include <numeric>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "support/fixture.hpp"

using namespace std::chrono_literals;

namespace {
std::vector<char> pattern(std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<char>(i * 131 + 7);
  return v;
}
}  // namespace

TEST_CASE("SharedMemory.threshold_reads_the_environment") {
  const auto* a = ferry::detail::large_block_allocator();
  REQUIRE(a != nullptr);
  CHECK(a->threshold == std::size_t{1} << 20);  // the default; FERRY_SHM_THRESHOLD overrides it
}

TEST_CASE("SharedMemory.large_arguments_at_every_size_around_the_threshold") {
  ferry::Executor ex(support::options(2));
  const std::size_t t = std::size_t{1} << 20;
  for (std::size_t n : {t - 9, t - 8, t - 1, t, t + 1, 3 * t + 5, std::size_t{80'000'000}}) {
    CAPTURE(n);
    CHECK(ex.submit(byte_count, pattern(n)).get() == n);
  }
  std::vector<double> values(2'000'000);
  std::iota(values.begin(), values.end(), 0.0);
  CHECK(ex.submit(sum, values).get() == doctest::Approx(1999999.0 * 2000000.0 / 2));
}

TEST_CASE("SharedMemory.bytes_view_arguments_arrive_without_a_copy") {
  ferry::Executor ex(support::options(2));
  for (std::size_t n : {std::size_t{0}, std::size_t{100}, std::size_t{1} << 20, std::size_t{80'000'000}}) {
    CAPTURE(n);
    auto in = pattern(n);
    std::uint64_t want = 0;
    for (char c : in) want += static_cast<unsigned char>(c);
    CHECK(ex.submit(byte_sum, in).get() == want);                                   // by function
    CHECK(ex.submit<std::uint64_t>("byte_sum", ferry::BytesView(in)).get() == want);  // by name
    CHECK(ex.submit(view_size, std::string(n, 'v')).get() == n);
  }
  std::vector<std::vector<char>> chunks = {pattern(3), pattern(2'000'000), {}};
  std::vector<std::size_t> sizes = ex.map(view_size, chunks);
  CHECK(sizes == std::vector<std::size_t>{3, 2'000'000, 0});
}

TEST_CASE("SharedMemory.payloads_over_2_GiB_both_ways") {
  // Nothing on the way counts bytes in 32 bits.
  ferry::Executor ex(support::options(1));
  const std::uint64_t n = (std::uint64_t{1} << 31) + 17;
  {
    std::vector<char> big(n, 'b');
    big[n - 1] = 'e';
    CHECK(ex.submit(view_size, big).get() == n);
  }
  std::vector<char> back = ex.submit(make_bytes, n).get();
  CHECK(back.size() == n);
  CHECK(back.front() == 'x');
  CHECK(back.back() == 'x');
}

TEST_CASE("SharedMemory.large_results_come_back_intact") {
  ferry::Executor ex(support::options(2));
  for (std::size_t n : {std::size_t{10}, std::size_t{1} << 20, std::size_t{5'000'003}}) {
    CAPTURE(n);
    auto in = pattern(n);
    auto out = ex.submit(echo_bytes, in).get();
    CHECK(out == in);
  }
  // Many at once, each mapped by the host until its future is read.
  std::vector<ferry::Future<std::vector<char>>> fs;
  for (int i = 0; i < 6; ++i) fs.push_back(ex.submit(echo_bytes, pattern(3'000'000 + i)));
  for (int i = 0; i < 6; ++i) CHECK(fs[i].get() == pattern(3'000'000 + i));
}

TEST_CASE("SharedMemory.arguments_survive_a_crash_and_are_resent") {
  support::ScopedEnv depth("FERRY_PIPELINE_DEPTH", "3");
  ferry::Executor ex(support::options(1));
  REQUIRE(ex.warm_up(10s));
  auto big = pattern(4'000'000);
  auto crash_call = ex.submit(segfault, 0);
  auto after = ex.submit(byte_count, big);  // queued behind the crash, in shared memory
  CHECK_THROWS_AS(crash_call.get(), ferry::TerminatedWorkerError);
  CHECK(after.get() == big.size());
}

TEST_CASE("SharedMemory.no_descriptor_leaks") {
  auto fds = support::open_fds();
  {
    ferry::Executor ex(support::options(2));
    for (int i = 0; i < 10; ++i) {
      CHECK(ex.submit(byte_count, pattern(2'000'000)).get() == 2'000'000u);
      CHECK(ex.submit(echo_bytes, pattern(2'000'000)).get().size() == 2'000'000u);
    }
  }
  // Blocks kept for reuse hold one descriptor each: at most a few, never one per call.
  CHECK(support::open_fds() <= fds + 4);
}
