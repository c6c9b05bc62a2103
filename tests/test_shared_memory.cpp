// SPDX-License-Identifier: BSD-3-Clause
// Large arguments and results travel through shared memory (memfd + SCM_RIGHTS): correct at every
// size around the threshold, both ways, after a crash, and without leaking descriptors.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "crash.hpp"
#include "math.hpp"
#include "support/child_process.hpp"
#include "support/fixture.hpp"
#include "support/in_flight.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {
std::vector<char> pattern(std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<char>(i * 131 + 7);
  return v;
}

/// Whether the memfd of a shared buffer holds `want` at `offset`, read with pread: what the peer
/// that maps the memfd sees, whichever way (mapping or write(2)) the bytes went in.
bool memfd_holds(const ferry::detail::Buffer& b, std::size_t offset, const char* want, std::size_t n) {
  std::vector<char> chunk(std::size_t{1} << 20);
  while (n > 0) {
    ssize_t r = ::pread(b.fd(), chunk.data(), std::min(n, chunk.size()), static_cast<off_t>(offset));
    if (r <= 0 || std::memcmp(chunk.data(), want, static_cast<std::size_t>(r)) != 0) return false;
    offset += static_cast<std::size_t>(r);
    want += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

/// Makes memfd_create fail with EPERM in this process and every process it starts, as a
/// container's seccomp profile can: no shared memory to be had. False where it cannot.
bool refuse_memfd_create() {
#if defined(__x86_64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_AARCH64;
#else
  return false;
#endif
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
}

/// Whether `p` lies in a mapping of a file whose name (in /proc/self/maps) contains `name`.
bool in_mapping_of(const void* p, const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  for (std::string line; std::getline(maps, line);) {
    std::uintptr_t from = 0, to = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &from, &to) == 2 && from <= at && at < to)
      return line.find(name) != std::string::npos;
  }
  return false;
}

/// Bytes of memory the memfd holds (pages allocated), not its size.
std::size_t memfd_allocated(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  return static_cast<std::size_t>(st.st_blocks) * 512;
}
}  // namespace

TEST_CASE("SharedMemory.a_payload_in_huge_pages_is_refused") {
  // A worker's result in a memfd of huge pages: a hole it punches takes the page from under the
  // host's mapping, seals or not, and the host's next read is a SIGBUS when no huge page is
  // left. Refused before it is mapped.
  int fd = ::memfd_create("huge", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
  if (fd < 0) {
    MESSAGE("no huge-page memfd on this kernel: " << std::strerror(errno));
    return;
  }
  ::ftruncate(fd, 2 << 20);
  REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
  try {
    ferry::detail::Buffer::map_shared(fd, 4096);  // takes the descriptor
    FAIL("mapped");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("huge pages") != std::string::npos);
  }
}

TEST_CASE("SharedMemory.a_mapped_buffer_written_to_becomes_a_buffer_of_its_own") {
  // A read-only mapping of a peer's memfd (a large result): an append, a resize or a copy assigned
  // into it freed the mapping with delete[] and wrote into read-only pages. (1 MiB and more: a
  // smaller payload is copied, not mapped.)
  const std::size_t size = (std::size_t{1} << 20) + 5000;
  auto mapped = [&] {
    int fd = ::memfd_create("peer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(fd >= 0);
    const std::string bytes(size, 'p');
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) == 0);
    return ferry::detail::Buffer::map_shared(fd, bytes.size());
  };
  {
    auto b = mapped();
    REQUIRE(in_mapping_of(b.data(), "memfd:peer"));  // the mapping, not a copy
    b.append("xyz", 3);
    CHECK(b.size() == size + 3);
    CHECK(b.view().substr(size - 2) == "ppxyz");
    CHECK_FALSE(in_mapping_of(b.data(), "memfd:peer"));  // a buffer of ours now
  }
  {
    auto b = mapped();
    ferry::detail::Buffer other;
    other.append("other", 5);
    b = other;
    CHECK(b.view() == "other");
  }
  {
    auto b = mapped();
    b.resize(size + 1000);
    CHECK(b.size() == size + 1000);
    CHECK(b.view().substr(0, 3) == "ppp");
  }
}

TEST_CASE("SharedMemory.threshold_reads_the_environment") {
  const auto* a = ferry::detail::large_block_allocator();
  REQUIRE(a != nullptr);
  CHECK(a->threshold == std::size_t{1} << 20);  // the default
  // FERRY_SHM_THRESHOLD is read when libferry loads: a process started with it.
  support::TempDir dir;
  auto threshold_with = [&](const std::string& value) {
    auto r = support::run({FERRY_TEST_HOST, FERRY_TEST_WORKER, FERRY_TEST_PLUGIN_DIR, "shm-threshold"}, dir.path,
                          {.env = {{"FERRY_SHM_THRESHOLD", value}}});
    CHECK_MESSAGE(r.status == 0, r.err);
    auto lines = r.out.substr(r.out.find('\n') + 1);  // after the workers' pids
    return lines.substr(0, lines.find('\n'));
  };
  CHECK(threshold_with("64K") == "65536");
  CHECK(threshold_with("") == "1048576");  // unset: the default
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

TEST_CASE("SharedMemory.descriptors_the_kernel_will_not_pass_leave_the_bytes_to_go_inline") {
  // A task can fill its user's count of descriptors in flight on UNIX sockets (sent into a socket
  // nobody reads, held while its worker lives); past a process's soft RLIMIT_NOFILE the kernel
  // refuses every descriptor that process passes (ETOOMANYREFS) unless it has CAP_SYS_RESOURCE.
  // A large argument then waited for good (the host took the refusal for its worker's death and
  // waited for an exit that never came), and a large result ended its worker (exit 67: a
  // channel error). Both go inline now. Root is exempt: a child becomes nobody, puts 300 of
  // nobody's descriptors in flight, and lowers its own limit (its workers' too) to 128.
  const int code = support::exit_code_of_child(
      [] {
        if (!support::become_another_user()) return 90;
        if (::access(FERRY_TEST_WORKER, X_OK) != 0) return 77;
        rlimit lim{};
        if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_max < 512) return 78;
        lim.rlim_cur = lim.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 91;
        if (!support::hold_descriptors_in_flight(300)) return 93;
        lim.rlim_cur = 128;
        if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 94;
        ferry::Executor ex(support::options(1));
        const std::vector<char> big = pattern(3 << 20);  // past FERRY_SHM_THRESHOLD: a memfd each way
        auto f = ex.submit(echo_bytes, big);
        if (!f.wait_for(std::chrono::seconds(30))) return 95;  // the argument waited for good
        try {
          if (f.get() != big) return 96;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "%s\n", e.what());  // a worker that ended with a channel error
          return 97;
        }
        return 0;
      },
      std::chrono::seconds(60));
  if (code == 77 || code == 78) {
    MESSAGE("nobody cannot run this build's worker here, or its hard RLIMIT_NOFILE is under 512: not tested here");
    return;
  }
  CHECK_MESSAGE(code == 0, "child exit code " << code << " (its stderr says why)");
}

TEST_CASE("SharedMemory.bytes_view_arguments_arrive_whole_at_every_size") {
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
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer's shadow of the copies (yours, the block, the worker's) took this machine's
  // 24 GiB: the kernel's OOM killer ended the test process (AddressSanitizer runs it).
  MESSAGE("skipped under ThreadSanitizer (its shadow memory for 2 GiB copies exhausts the machine)");
  return;
#endif
  ferry::Executor ex(support::options(1));
  const std::uint64_t n = (std::uint64_t{1} << 31) + 17;
  {
    std::vector<char> big(n, 'b');
    big[n - 1] = 'e';
    // Every byte arrives (written into the memfd in 1 GiB pieces): the sum counts them all.
    CHECK(ex.submit(byte_sum, big).get() == (n - 1) * 'b' + 'e');
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

TEST_CASE("SharedMemory.a_large_append_allocates_only_the_pages_it_fills") {
  // Issue 10: appending one 2 GB value grew the buffer to ~1.3x its size and MAP_POPULATE had the
  // kernel zero every page of that before the copy overwrote it. Now the capacity is what the
  // append needs and the memfd holds pages for the bytes written, nothing more.
  using ferry::detail::Buffer;
  const std::size_t page = 4096;
  const std::size_t n = (std::size_t{520} << 20) + 5;  // over the 512 MiB recycle cache: a fresh block
  const std::vector<char> big = pattern(n);
  const std::uint64_t prefix = n;
  Buffer b;
  b.append(&prefix, sizeof prefix);  // what cereal writes first: the size, then the bytes
  b.append(big.data(), big.size());
  REQUIRE(b.fd() >= 0);
  REQUIRE(b.size() == sizeof prefix + n);
  CHECK(b.capacity() < b.size() + page);
  CHECK(memfd_allocated(b.fd()) < b.size() + page);
  // Small values after a large one land in the same memfd, readable both ways.
  const char tail[] = "tail";
  b.append(tail, sizeof tail);
  CHECK(std::memcmp(b.data(), &prefix, sizeof prefix) == 0);
  CHECK(std::memcmp(b.data() + sizeof prefix, big.data(), n) == 0);
  CHECK(std::memcmp(b.data() + sizeof prefix + n, tail, sizeof tail) == 0);
  CHECK(memfd_holds(b, 0, reinterpret_cast<const char*>(&prefix), sizeof prefix));
  CHECK(memfd_holds(b, sizeof prefix, big.data(), n));
  CHECK(memfd_holds(b, sizeof prefix + n, tail, sizeof tail));
}

TEST_CASE("SharedMemory.appends_of_every_size_read_back_through_the_mapping_and_the_memfd") {
  // Small appends creep over the threshold (the buffer moves into a memfd, then grows by mremap),
  // large ones are written through the memfd, and a block comes back from the recycle cache for
  // the next buffer: the peer (the memfd) and the owner (the mapping) see the same bytes.
  using ferry::detail::Buffer;
  const std::size_t t = std::size_t{1} << 20;
  const std::vector<char> src = pattern(9 * t + 3);
  for (int round = 0; round < 2; ++round) {  // the second round reuses the first one's blocks
    CAPTURE(round);
    Buffer b;
    std::vector<char> want;
    auto add = [&](std::size_t at, std::size_t len) {
      b.append(src.data() + at, len);
      want.insert(want.end(), src.begin() + static_cast<std::ptrdiff_t>(at),
                  src.begin() + static_cast<std::ptrdiff_t>(at + len));
    };
    for (std::size_t i = 0; want.size() < t + t / 2; ++i) add(i % 1000, 100);  // creeps over 1 MiB
    add(5, 3 * t + 1);                                                      // large, into a grown block
    add(7, 10);
    add(11, Buffer::write_through_bytes);                                   // the smallest large append
    add(13, 4 * t);
    REQUIRE(b.fd() >= 0);
    REQUIRE(b.size() == want.size());
    CHECK(std::memcmp(b.data(), want.data(), want.size()) == 0);
    CHECK(memfd_holds(b, 0, want.data(), want.size()));

    Buffer r(5 * t + 1);  // resize: written through data()
    REQUIRE(r.fd() >= 0);
    std::memcpy(r.data(), src.data(), r.size());
    CHECK(memfd_holds(r, 0, src.data(), r.size()));
  }
}

TEST_CASE("SharedMemory.a_host_out_of_descriptors_fails_only_the_large_result_it_cannot_receive") {
  // The kernel drops a memfd the receiver has no room for (MSG_CTRUNC): the host took that for a
  // worker sending too many descriptors, killed it "for a malformed frame" and blamed its call
  // on it (TerminatedWorkerError, retried under max_retries_on_worker_death).
  const int code = support::exit_code_of_child(
      [] {
        ferry::Executor ex(support::options(1));
        if (ex.submit(make_bytes, 1).get().size() != 1) return 1;  // resolved, worker up
        const auto pids = ex.worker_pids();
        support::DescriptorsTaken held;
        const std::string what =
            support::outcome_of([&] { return ex.submit(make_bytes, std::uint64_t{2} << 20).get().size(); });
        held.release();
        std::fprintf(stderr, "%s\n", what.c_str());
        if (what.find("SerializationError: ") != 0 || what.find("the host could not receive the result") == std::string::npos)
          return 2;
        if (ex.submit(make_bytes, std::uint64_t{2} << 20).get().size() != std::size_t{2} << 20) return 3;
        return ex.worker_pids() == pids ? 0 : 4;  // the worker did nothing wrong: still there
      },
      30s);
  CHECK_MESSAGE(code == 0, "2: not the host's error (see stderr), 3: the next result failed, 4: the worker was replaced");
}

TEST_CASE("SharedMemory.calls_queued_with_large_arguments_leave_descriptors_for_their_results") {
  // Each queued call's arguments in shared memory held a memfd: a program that submitted more
  // large calls than its descriptor limit had room for took every descriptor, and each large
  // result then came back to a host that could not receive it (SerializationError for nearly all
  // of them). A memfd is now made only while it leaves a reserve free: past it, arguments stay
  // on the heap and go through the socket.
  const int code = support::exit_code_of_child(
      [] {
        const std::size_t size = (std::size_t{1} << 20) + 4096;  // over FERRY_SHM_THRESHOLD both ways
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        limit.rlim_cur = static_cast<rlim_t>(support::open_fds() + 120);
        if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 1;
        ferry::Executor ex(support::options(2));
        const std::vector<char> big = pattern(size);
        std::vector<ferry::Future<std::vector<char>>> calls;
        for (int i = 0; i < 200; ++i) calls.push_back(ex.submit(echo_bytes, big));
        int lost = 0;
        for (auto& call : calls) {
          const std::string what = support::outcome_of([&] { return call.get() == big ? 1 : 0; });
          if (what != "returned 1" && lost++ == 0) std::fprintf(stderr, "%s\n", what.c_str());
        }
        return lost == 0 ? 0 : 2;
      },
      60s);
  CHECK_MESSAGE(code == 0, "2: some results were lost (the first one's error is on stderr)");
}

TEST_CASE("SharedMemory.blocks_kept_for_reuse_hold_few_descriptors") {
  // A burst of concurrent large calls left every block it used in the reuse cache (up to 512 MiB
  // of them), each holding a descriptor for the rest of the process's life: 400 calls of 1 MiB
  // kept 90 descriptors, which the program's own files then lacked. At most 64 are kept.
  const std::size_t before = support::open_fds();
  {
    ferry::Executor ex(support::options(2));
    const std::vector<char> big = pattern((std::size_t{1} << 20) + 4096);
    std::vector<ferry::Future<std::size_t>> calls;
    for (int i = 0; i < 400; ++i) calls.push_back(ex.submit(byte_count, big));
    for (auto& call : calls) CHECK(call.get() == big.size());
  }
  CHECK(support::open_fds() <= before + 64);
}

namespace {
/// This process's descriptors of shared-memory blocks of its own.
std::size_t ferry_blocks_open() {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(e.path(), ec).string().find("memfd:ferry-buffer") != std::string::npos) ++n;
  }
  return n;
}

/// Runs 20 concurrent calls of 1 MiB arguments on `ex` (each in a block of its own).
void burst_of_large_calls(ferry::Executor& ex) {
  const std::vector<char> big = pattern((std::size_t{1} << 20) + 4096);
  std::vector<ferry::Future<std::size_t>> calls;
  for (int i = 0; i < 20; ++i) calls.push_back(ex.submit(byte_count, big));
  for (auto& call : calls) CHECK(call.get() == big.size());
}
}  // namespace

TEST_CASE("SharedMemory.blocks_kept_for_reuse_go_with_the_last_executor") {
  // Blocks kept for reuse stayed for the rest of the process once a burst had passed: up to
  // 64 descriptors and 512 MiB (142 MB resident in an audit) with no executor left to use them.
  // The last executor's end drops them; while another lives they are kept for it.
  {
    ferry::Executor other(support::options(1));
    {
      ferry::Executor ex(support::options(2));
      burst_of_large_calls(ex);
      CHECK(ferry_blocks_open() > 0);
    }
    CHECK(ferry_blocks_open() > 0);  // kept for `other`
    burst_of_large_calls(other);
  }
  CHECK(ferry_blocks_open() == 0);
}

TEST_CASE("SharedMemory.a_block_is_sealed_against_shrinking_before_it_has_a_size") {
  // A block was given its size, then sealed against shrinking: a task that had opened it through
  // /proc/<host>/fd in between (every block of the host is there, as it is made) could truncate
  // it, and the host's first write into the mapping made just after was a SIGBUS. A thread of
  // this process plays that task, cutting every memfd it finds unsealed, while blocks are made.
  const int code = support::exit_code_of_child(
      [] {
        using ferry::detail::Buffer;
        {
          // The reuse cache full of smaller blocks: each buffer below is a block made anew.
          std::vector<Buffer> kept(64);
          for (auto& b : kept) b.resize((std::size_t{1} << 20) + 4096);
        }
        std::atomic<bool> stop{false};
        std::thread cutter([&] {
          int hot = -1;  // where a fresh block was seen last: the next one is made there too
          auto cut = [&](int fd) {
            if (::fcntl(fd, F_GET_SEALS) == 0) {
              (void)::ftruncate(fd, 0);
              hot = fd;
            }
          };
          while (!stop.load(std::memory_order_relaxed)) {
            for (int fd = 3; fd < 256; ++fd) cut(fd);
            for (int i = 0; hot >= 0 && i < 1000; ++i) cut(hot);
          }
        });
        const std::size_t size = std::size_t{2} << 20;
        int wrong = 0;
        for (const auto until = std::chrono::steady_clock::now() + 4s; std::chrono::steady_clock::now() < until;) {
          Buffer b(size);
          b.data()[0] = 1;
          b.data()[size - 1] = 2;  // a SIGBUS here when the block was cut
          if (b.fd() < 0) ++wrong;
        }
        stop = true;
        cutter.join();
        return wrong == 0 ? 0 : 2;
      },
      60s);
  CHECK_MESSAGE(code == 0, "-2: killed by a signal (a block cut under its mapping: SIGBUS); 2: not in shared memory");
}

TEST_CASE("SharedMemory.a_block_left_by_a_failed_chunk_does_not_carry_the_next_result") {
  // A map chunk whose first result went into shared memory (1 MiB) and whose second item threw
  // left that block as the worker's result buffer: the next call's result was written into it
  // and sent in it, and the empty one of a void task was a shared payload of 0 bytes, which the
  // host refuses: the worker was killed "for a malformed frame" and the call failed with it.
  ferry::Executor ex(support::options(1));
  // The second item is past a vector's max_size(): std::length_error, thrown before any
  // allocation (an allocation of 2^62 bytes ends a sanitizer's worker instead of throwing).
  const std::vector<std::uint64_t> sizes = {(std::uint64_t{1} << 20) - 8, (std::uint64_t{1} << 63) + 1};
  CHECK_THROWS_AS(ex.map(make_bytes, sizes, {.chunksize = 2}), ferry::TaskError);
  const auto pids = ex.worker_pids();
  CHECK(support::outcome_of([&] {
          ex.submit(noop).get();
          return 0;
        }) == "returned 0");
  CHECK(ex.worker_pids() == pids);
}

TEST_CASE("SharedMemory.without_shared_memory_a_payload_larger_than_a_frame_fails_only_its_call") {
  // Where no memfd can be made (a seccomp profile refuses memfd_create), large arguments and
  // results stay on the heap and go through the socket. One larger than FERRY_MAX_FRAME_BYTES
  // was sent all the same: the worker took it for a malformed frame and exited (arguments), or
  // the host killed it for one (a result), and the call failed with TerminatedWorkerError, blamed
  // on a worker that did nothing wrong (and retried, under max_retries_on_worker_death).
  const int code = support::exit_code_of_child(
      [] {
        support::ScopedEnv frame("FERRY_MAX_FRAME_BYTES", "4M");
        if (!refuse_memfd_create()) return 77;  // no seccomp here: nothing to show
        if (::memfd_create("probe", MFD_CLOEXEC) >= 0) return 1;
        ferry::Executor ex(support::options(1));
        const std::size_t fits = std::size_t{3} << 20, too_large = std::size_t{5} << 20;
        if (ex.submit(byte_count, pattern(fits)).get() != fits) return 2;  // through the socket
        if (ex.submit(make_bytes, fits).get().size() != fits) return 2;
        const auto pids = ex.worker_pids();
        const std::string args = support::outcome_of([&] { return ex.submit(byte_count, pattern(too_large)).get(); });
        const std::string result = support::outcome_of([&] { return ex.submit(make_bytes, too_large).get().size(); });
        std::fprintf(stderr, "arguments: %s\nresult: %s\n", args.c_str(), result.c_str());
        for (const std::string& what : {args, result})
          if (what.find("SerializationError: ") != 0 || what.find("FERRY_MAX_FRAME_BYTES") == std::string::npos ||
              what.find("memfd_create") == std::string::npos)
            return 3;
        if (ex.submit(byte_count, pattern(fits)).get() != fits) return 4;
        return ex.worker_pids() == pids ? 0 : 5;
      },
      60s);
  if (code == 77) {
    MESSAGE("skipped: a seccomp filter cannot be installed here");
    return;
  }
  CHECK_MESSAGE(code == 0, "1: memfd_create not refused; 2, 4: a call under a frame failed; 3: not a SerializationError "
                           "naming the frame limit and memfd_create (see stderr); 5: the worker was replaced");
}

TEST_CASE("SharedMemory.small_shared_payloads_held_take_no_mapping_each") {
  // With FERRY_SHM_THRESHOLD set low, every result came back in a mapping of its own, kept as long
  // as its future: a host holding 65,530 of them (vm.max_map_count) could map no more, and the
  // rest failed with SerializationError ("could not be mapped: ... out of memory or address
  // space"), as would the program's own large mallocs and thread stacks. 70,000 payloads of 16
  // bytes, each in a sealed memfd as a worker sends it, are all received and held (5,000 more
  // than this machine's vm.max_map_count, 65,530 by default).
  int max_maps = 0;
  std::ifstream("/proc/sys/vm/max_map_count") >> max_maps;
  if (max_maps <= 0 || max_maps > 200'000) {
    MESSAGE("skipped: vm.max_map_count is " << max_maps << " here, too many mappings to reach in a test");
    return;
  }
  const int count = max_maps + 5'000;
  std::vector<ferry::detail::Buffer> held;
  held.reserve(static_cast<std::size_t>(count));
  std::string failure;
  for (int i = 0; i < count && failure.empty(); ++i) {
    const int fd = ::memfd_create("result", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    char bytes[16];
    std::memset(bytes, 'a' + i % 26, sizeof bytes);
    if (fd < 0 || ::write(fd, bytes, sizeof bytes) != static_cast<ssize_t>(sizeof bytes) ||
        ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0) {
      FAIL("cannot make payload " << i << ": " << std::strerror(errno));
    }
    try {
      held.push_back(ferry::detail::Buffer::map_shared(fd, sizeof bytes));  // takes the descriptor
    } catch (const std::exception& e) {
      failure = "payload " + std::to_string(i) + ": " + e.what();
    }
  }
  CHECK_MESSAGE(failure.empty(), failure);
  REQUIRE(held.size() == static_cast<std::size_t>(count));
  CHECK(held[count - 1].view() == std::string(16, 'a' + (count - 1) % 26));
}

TEST_CASE("SharedMemory.initializer_arguments_larger_than_a_frame_are_refused_at_construction") {
  // An initializer's arguments travel inside its init frame, never in shared memory: past
  // FERRY_MAX_FRAME_BYTES (weights of 1.5 GB given to a load_model initializer) every worker took
  // the frame for a malformed one and exited, and the executor broke with "ended with exit code 66
  // (ferry-worker: protocol error) while its initializer ran". Refused when the executor is made,
  // saying why.
  support::ScopedEnv frame("FERRY_MAX_FRAME_BYTES", "4M");
  ferry::ExecutorOptions o = support::options(1);
  o.initializer = ferry::Call(wait_while_exists, std::string(std::size_t{5} << 20, 'p'));
  std::string what;
  try {
    ferry::Executor ex(o);
    what = "made; a call " + support::outcome_of([&] { return ex.submit(square, 3).get(); });
  } catch (const std::invalid_argument& e) {
    what = e.what();
  } catch (const std::exception& e) {
    what = std::string("other: ") + e.what();
  }
  CHECK_MESSAGE(what.find("initializer") != std::string::npos, what);
  CHECK_MESSAGE(what.find("FERRY_MAX_FRAME_BYTES") != std::string::npos, what);
  // Under the limit, as before.
  o.initializer = ferry::Call(wait_while_exists, std::string(std::size_t{3} << 20, 'p'));
  ferry::Executor ex(o);
  CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("SharedMemory.a_forked_child_does_not_take_its_parents_blocks") {
  // The blocks kept for reuse are shared mappings of memfds: a child of fork() inherited them
  // with the cache, and its next buffer took the very block the parent's next buffer took too.
  // A child that made an executor of its own (supported: Fork.*) wrote its arguments into the
  // parent's in flight, and the other way round. Here the child fills its buffer, then the
  // parent fills its own: the child must still read its own bytes.
  using ferry::detail::Buffer;
  const std::size_t size = std::size_t{2} << 20;
  {
    Buffer kept(size);  // a block for the cache
    std::memset(kept.data(), 'k', size);
  }
  int child_wrote[2], parent_wrote[2];
  REQUIRE(::pipe(child_wrote) == 0);
  REQUIRE(::pipe(parent_wrote) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    support::leak_check_off = true;
    // Only its own ends: a parent that leaves early closes parent_wrote[1], and its read sees EOF.
    ::close(child_wrote[0]);
    ::close(parent_wrote[1]);
    int code = 0;
    {
      Buffer mine(size);
      std::memset(mine.data(), 'c', size);
      char go = 0;
      if (::write(child_wrote[1], "c", 1) != 1 || ::read(parent_wrote[0], &go, 1) != 1) code = 2;
      else if (mine.data()[0] != 'c' || mine.data()[size - 1] != 'c') code = 1;  // the parent's bytes
    }
    _exit(code);
  }
  // The child's write end closed here: a child that dies is EOF, not a read that never returns.
  // parent_wrote[0] is kept: a write to a child that died succeeds (its status says the rest)
  // rather than killing this process by SIGPIPE.
  ::close(child_wrote[1]);
  // On every way out (a failed REQUIRE): the pipes closed (the child's read ends), the child
  // killed and reaped unless it was, so that it never outlives the case.
  struct Cleanup {
    pid_t pid;
    int from_child, to_child, kept;
    bool reaped = false;
    ~Cleanup() {
      for (int fd : {from_child, to_child, kept}) ::close(fd);
      if (!reaped) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } cleanup{pid, child_wrote[0], parent_wrote[1], parent_wrote[0]};
  pollfd wrote{child_wrote[0], POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&wrote, 1, 30000);
  } while (ready < 0 && errno == EINTR);
  REQUIRE_MESSAGE(ready == 1, "the child did not fill its buffer within 30 s");
  char go = 0;
  REQUIRE(::read(child_wrote[0], &go, 1) == 1);
  Buffer mine(size);
  std::memset(mine.data(), 'p', size);
  REQUIRE(::write(parent_wrote[1], "p", 1) == 1);
  int status = 0;
  REQUIRE(support::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 30s));
  cleanup.reaped = true;
  CHECK_MESSAGE(WIFEXITED(status), "the child died of signal " << WTERMSIG(status));
  CHECK_MESSAGE(WEXITSTATUS(status) == 0, "1: the child's buffer held the parent's bytes");
  CHECK(mine.data()[0] == 'p');
  CHECK(mine.data()[size - 1] == 'p');
}

TEST_CASE("SharedMemory.a_frame_limit_set_after_loading_still_sends_what_exceeds_it_in_shared_memory") {
  // With descriptors scarce (the last quarter of RLIMIT_NOFILE), a buffer stays on the heap
  // unless it would not fit a frame: that size was half of FERRY_MAX_FRAME_BYTES as read when
  // libferry loaded. A program that set the variable later (setenv before making its executor)
  // had arguments larger than its frames kept on the heap, and their calls failed.
  const int code = support::exit_code_of_child(
      [] {
        support::ScopedEnv frame("FERRY_MAX_FRAME_BYTES", "4M");
        ferry::Executor ex(support::options(1));
        if (ex.submit(byte_count, pattern(16)).get() != 16) return 1;  // the worker is up
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        limit.rlim_cur = static_cast<rlim_t>(support::open_fds() + 30);  // each new one scarce
        if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 1;
        const std::size_t size = std::size_t{5} << 20;
        const std::string what = support::outcome_of([&] { return ex.submit(byte_count, pattern(size)).get(); });
        std::fprintf(stderr, "%s\n", what.c_str());
        return what == "returned " + std::to_string(size) ? 0 : 2;
      },
      60s);
  CHECK_MESSAGE(code == 0, "2: the call failed (stderr says how)");
}
