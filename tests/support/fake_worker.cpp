// SPDX-License-Identifier: BSD-3-Clause
// A ferry-worker impostor for tests/test_hostile_worker.cpp (ExecutorOptions::worker_path): it
// speaks the protocol, answers `square(int)` tasks inline (x * x), and breaks the protocol the
// way FERRY_FAKE_MODE says when a task's argument is 1:
//   shm_truncate    answers in an unsealed memfd, which it truncates when the next task arrives
//   shm_file        answers in a regular file instead of a memfd
//   shm_empty       answers in a sealed memfd of 0 bytes
//   shm_sparse      answers in a sealed memfd of 1 TiB with no page behind it
//   shm_sealed      answers every task in a sealed memfd (as ferry-worker does a large result)
//   shm_socket      answers in a TCP socket whose last close waits an hour (SO_LINGER, unread
//                   data, its peer kept open by a child that dies with this worker)
//   shm_five        answers in a sealed memfd sent with four more descriptors in the same message,
//                   three memfds and, last, such a socket (one more than a 4-slot buffer holds)
//   bye_running     says bye (max_tasks) instead of answering, then never answers nor exits
//   bye_first       says bye (memory_growth) as soon as it reads the task, and exits (a task that
//                   writes the frame as its first act); each such task read adds a byte to the
//                   file FERRY_FAKE_RUNS names
//   forge_last      answers as if its answer were its last (flag_last), as a task can write it,
//                   reads the task sent behind, then answers the first call again, as its worker
//                   would, and the second; every task of argument 3 read adds a byte to the
//                   file FERRY_FAKE_RUNS names
//   recycle_each    (every task) answers, marked as its last answer, says bye (memory_growth)
//                   and exits, as ferry-worker recycling after every call
//   idle_crossed    says bye (idle_timeout) before it answers, as ferry-worker whose idle time
//                   ran out just as the host sent the task (every task whose argument is 1)
//   idle_then_die   says bye (idle_timeout) over the task, then exits (code 1) without answering
//   idle_running    says bye (idle_timeout) over the task, then neither answers nor exits (a task
//                   that wrote that bye and runs on)
//   partial_die     forks a child that keeps the channel open, writes part of a frame, dies
//   partial_hang    writes part of its result frame (20 bytes of the head), then neither the
//                   rest nor anything else, and does not exit
//   hello_again     sends a second hello instead of answering
//   long_host_name  (at start) says hello with a host name of 300 bytes
//   old_protocol    (at start) says hello speaking the protocol before this one
//   init_failed     answers with an initializer failure
//   init_ack_again  says again that its initializer ran, instead of answering
//   no_init_ack     (at start) never says its initializer ran, and sends a result for call 1
//   out_of_order    answers the next task (sent behind it) first, and never this one
//   huge_times      answers with the largest times a result can carry (started, finished, CPU)
//   claim_huge      announces a 768 MiB result, sends 1 MiB of it, and exits (code 1)
//   crash_flood     sends 5,000 crash reports of another process (pid 1), then never answers
//   ring_head       (with --rings 1, an MPI agent's worker) sets the head of its ring to the
//                   agent far past what it wrote
//   ring_tail       (with --rings 1) answers, then sets the tail of the ring from the agent far
//                   past what the agent wrote, and reads no more
// With --rings 1 its frames go through the shared-memory rings (wire/ring.hpp), as ferry-worker's.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include <ferry/ferry.hpp>
#include <ferry/detail/task_record.hpp>

#include "platform/fd.hpp"
#include "wire/channel.hpp"
#include "wire/failure.hpp"
#include "wire/protocol.hpp"
#include "wire/ring.hpp"
#include "wire/stack.hpp"

namespace proto = ferry::detail::protocol;
using ferry::detail::Buffer;
using ferry::detail::Fd;

namespace {

int channel = 3;
std::string mode;
ferry::detail::SharedRings rings;
ferry::detail::Ring to_agent, from_agent;
ferry::detail::RingControl* control_to_worker = nullptr;  // the same words, poked at directly
ferry::detail::RingControl* control_to_agent = nullptr;

bool send(const Buffer& b, std::string_view payload = {}, int pass = -1) {
  if (!rings) return ferry::detail::send_all(channel, {b.view(), payload}, pass);
  if (pass >= 0 && !ferry::detail::send_all(channel, {std::string_view("", 1)}, pass)) return false;
  for (std::string_view p : {b.view(), payload}) {
    while (!p.empty()) {
      long n = to_agent.write(p.data(), p.size());
      if (n < 0) return false;
      p.remove_prefix(static_cast<std::size_t>(n));
      if (n == 0) to_agent.wait_for_space(50);
    }
  }
  if (to_agent.consumer_waits()) (void)::send(channel, "", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  return true;
}

/// The rings' memfd, the channel's first byte (as ferry-worker's receive_rings).
void map_rings() {
  ferry::detail::FrameReader carrier(0);
  if (carrier.collect(channel, 0, 1) != 1) std::_Exit(3);
  Fd fd = carrier.take_descriptor();
  if (!fd) std::_Exit(3);
  rings = ferry::detail::SharedRings::map(fd.get());
  to_agent = rings.to_agent();
  from_agent = rings.to_worker();
  constexpr std::size_t capacity = ferry::detail::SharedRings::default_capacity;
  void* base = ::mmap(nullptr, ferry::detail::SharedRings::map_size(capacity), PROT_READ | PROT_WRITE,
                      MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) std::_Exit(3);
  control_to_worker = static_cast<ferry::detail::RingControl*>(base);
  control_to_agent = reinterpret_cast<ferry::detail::RingControl*>(
      static_cast<char*>(base) + sizeof(ferry::detail::RingControl) + capacity);
}

/// The next bytes from the host (or its agent); false when it is gone.
bool fill(ferry::detail::FrameReader& reader) {
  if (!rings) return reader.fill(channel, 0) > 0;
  for (;;) {
    ssize_t n = reader.fill([](char* into, std::size_t k) { return static_cast<ssize_t>(from_agent.read(into, k)); });
    if (n != 0) return n > 0;
    from_agent.wait_for_data(50);
    ssize_t c = reader.collect(channel, MSG_DONTWAIT);
    if (c == 0) return false;
  }
}

Buffer hello(std::string host, std::uint32_t version = proto::version) {
  return proto::encode_hello({version, ferry::detail::plugin_abi_version,
                              static_cast<int>(::getpid()), FERRY_VERSION_STRING, std::move(host)});
}

void answer_inline(std::uint64_t call, std::int32_t value, bool last = false) {
  Buffer head = proto::encode_result_head({call, proto::ResultStatus::ok, {}}, sizeof value);
  if (last) proto::mark_last_answer(head);
  send(head, std::string_view(reinterpret_cast<const char*>(&value), sizeof value));
}

/// Adds a byte to the file FERRY_FAKE_RUNS names, if any: a run of a task the test counts.
bool record_run() {
  const char* runs = std::getenv("FERRY_FAKE_RUNS");
  if (!runs) return true;
  Fd file(::open(runs, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  return file && ::write(file.get(), "r", 1) == 1;
}

/// The int32 argument of a square(int) task (its last 4 bytes), after its head in `r`.
std::int32_t argument_of(proto::BodyReader& r) {
  std::int32_t x = 0;
  std::string_view args = r.rest();
  if (args.size() >= sizeof x) std::memcpy(&x, args.data() + args.size() - sizeof x, sizeof x);
  return x;
}

/// Answers `call` with `value` in the memfd (or file) `fd`, `size` bytes announced.
void answer_shared(std::uint64_t call, std::int32_t value, int fd, std::uint64_t size) {
  if (size > 0 && ::pwrite(fd, &value, sizeof value, 0) != sizeof value) std::_Exit(3);
  send(proto::encode_shared_result(call, size), {}, fd);
}

Fd memfd(unsigned seals) {
  Fd fd(::memfd_create("fake-result", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd || ::ftruncate(fd.get(), 4096) != 0) std::_Exit(3);
  if (seals && ::fcntl(fd.get(), F_ADD_SEALS, seals) != 0) std::_Exit(3);
  return fd;
}

/// Sends `bytes` with every descriptor of `fds` in one message (SCM_RIGHTS).
bool send_with_descriptors(std::string_view bytes, std::initializer_list<int> fds) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.begin(), sizeof(int) * fds.size());
  return ::sendmsg(channel, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

/// A connected TCP socket over loopback with unread data queued and SO_LINGER of an hour: whoever
/// closes it last waits until its peer reads or goes. The peer stays open in a child that dies
/// with this process (PR_SET_PDEATHSIG), or after a minute at most.
Fd lingering_socket() {
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof at;
  if (!listener || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
      ::listen(listener.get(), 1) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&at), &len) != 0)
    std::_Exit(3);
  Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client || ::connect(client.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) std::_Exit(3);
  Fd peer(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!peer) std::_Exit(3);
  ::fcntl(client.get(), F_SETFL, O_NONBLOCK);
  static char junk[1 << 16];
  while (::write(client.get(), junk, sizeof junk) > 0) {
  }
  const linger hour{1, 3600};
  if (::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &hour, sizeof hour) != 0) std::_Exit(3);
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) std::_Exit(3);
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) std::_Exit(0);
    client.reset();  // the parent's copy goes to the host: the host's close must be the last
    ::close(channel);
    ::alarm(60);
    for (;;) ::pause();
  }
  return client;
}

}  // namespace

int main(int argc, char** argv) {
  bool with_rings = false;
  pid_t parent = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--fd") == 0) channel = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--rings") == 0) with_rings = std::strcmp(argv[i + 1], "1") == 0;
    if (std::strcmp(argv[i], "--parent") == 0) parent = static_cast<pid_t>(std::atoi(argv[i + 1]));
  }
  // Die with the host, as ferry-worker does: several modes pause for good, and a test process
  // killed before its executor's destructor ran left them holding ctest's output open. The
  // getppid check closes the race with a host that died before prctl.
  if (parent <= 0) parent = ::getppid();
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) return 0;
  if (const char* m = std::getenv("FERRY_FAKE_MODE")) mode = m;
  if (with_rings) map_rings();
  if (mode == "garbage_first") {
    // Bytes that are no frame header, before its hello.
    const char junk[16] = {'n', 'o', 't', ' ', 'a', ' ', 'f', 'r', 'a', 'm', 'e', '!', '!', '!', '!', '!'};
    (void)!::write(channel, junk, sizeof junk);
    for (;;) ::pause();
  }
  send(hello(mode == "long_host_name" ? std::string(300, 'h') : "fakehost",
             mode == "old_protocol" ? proto::version - 1 : proto::version));
  ferry::detail::FrameReader reader(proto::default_max_frame);
  if (rings) reader.set_descriptor_source(channel);
  Fd truncate_later;
  std::optional<std::uint64_t> held;  // out_of_order: the call it answers never
  for (;;) {
    ferry::detail::Frame f;
    while (!reader.next(f)) {
      if (!fill(reader)) return 0;  // the host is gone
    }
    if (f.header.type == proto::FrameType::shutdown) {
      send(proto::encode_bye(proto::ByeReason::shutdown));
      return 0;
    }
    if (f.header.type == proto::FrameType::init) {
      // As ferry-worker says its initializer ran (an initializer that does nothing here).
      if (mode != "no_init_ack") {
        send(proto::encode_result_head({0, proto::ResultStatus::ok, {}}, 0));
      } else {
        // A result it was given no call for (none comes before the initializer's word).
        answer_inline(1, 1);
      }
      continue;
    }
    if (f.header.type != proto::FrameType::task) continue;  // define, limits
    proto::BodyReader r(f.view());
    const std::uint64_t call = proto::decode_task_head(r).call;
    const std::int32_t x = argument_of(r);
    if (mode == "forge_last" && x == 3 && !record_run()) return 3;
    if (truncate_later && ::ftruncate(truncate_later.get(), 0) == 0) truncate_later.reset();
    const std::int32_t value = x * x;
    if (mode == "shm_sealed") {
      Fd fd = memfd(F_SEAL_SHRINK | F_SEAL_GROW);
      answer_shared(call, value, fd.get(), sizeof value);
      continue;
    }
    if (mode == "answer_then_stay") {
      // Its last call (max_tasks_per_child 1): answered, then neither a bye nor an exit.
      answer_inline(call, value);
      for (;;) ::pause();
    }
    if (mode == "recycle_each") {
      // As ferry-worker recycling after every call (max_memory_growth): its answer, which says
      // it is its last, then its bye, and it exits; what the host sent meanwhile was never read.
      answer_inline(call, value, /*last=*/true);
      send(proto::encode_bye(proto::ByeReason::memory_growth));
      return 0;
    }
    if (mode == "item_past_the_call" && x == 1) {
      // A failure naming an item its call does not have (a chunk holds a few).
      send(ferry::detail::encode_failure(
          call, ferry::detail::Failure::in_stage(ferry::detail::InvokeStatus::task_threw, 4000000000u,
                                                 "std::runtime_error", "no such item", "")));
      continue;
    }
    if (x != 1) {
      answer_inline(call, value);
      if (held && mode == "out_of_order") held.reset();  // answered after the one behind it
      continue;
    }
    if (mode == "shm_truncate") {
      truncate_later = memfd(0);
      answer_shared(call, value, truncate_later.get(), sizeof value);
    } else if (mode == "shm_file") {
      Fd file(::open(std::filesystem::temp_directory_path().c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
      if (!file || ::ftruncate(file.get(), 4096) != 0) return 3;
      answer_shared(call, value, file.get(), sizeof value);
    } else if (mode == "shm_sparse") {
      // A terabyte the kernel has no page of: free to make, costly to read.
      Fd fd(::memfd_create("fake-sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      constexpr std::uint64_t tib = std::uint64_t{1} << 40;
      if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(tib)) != 0 ||
          ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
        return 3;
      answer_shared(call, value, fd.get(), tib);
    } else if (mode == "shm_socket") {
      send(proto::encode_shared_result(call, sizeof value), {}, lingering_socket().get());
    } else if (mode == "shm_five") {
      Fd result = memfd(F_SEAL_SHRINK | F_SEAL_GROW);
      if (::pwrite(result.get(), &value, sizeof value, 0) != sizeof value) return 3;
      Fd a = memfd(0), b = memfd(0), c = memfd(0), lingering = lingering_socket();
      Buffer head = proto::encode_shared_result(call, sizeof value);
      if (!send_with_descriptors(head.view(), {result.get(), a.get(), b.get(), c.get(), lingering.get()})) return 3;
      // This worker goes on answering: its own close of the socket, the last one if the host
      // closed its copy first, must not stop it.
      std::thread([fd = lingering.release()] { ::close(fd); }).detach();
    } else if (mode == "shm_empty") {
      Fd fd = memfd(F_SEAL_SHRINK | F_SEAL_GROW);
      answer_shared(call, value, fd.get(), 0);
    } else if (mode == "idle_crossed") {
      send(proto::encode_bye(proto::ByeReason::idle_timeout));
      answer_inline(call, value);
    } else if (mode == "idle_then_die") {
      send(proto::encode_bye(proto::ByeReason::idle_timeout));
      std::_Exit(1);
    } else if (mode == "idle_running") {
      send(proto::encode_bye(proto::ByeReason::idle_timeout));
      for (;;) ::pause();
    } else if (mode == "forge_last") {
      answer_inline(call, value, /*last=*/true);
      ferry::detail::Frame next;
      while (!reader.next(next)) {
        if (!fill(reader)) return 0;
      }
      if (next.header.type != proto::FrameType::task) return 3;
      proto::BodyReader behind(next.view());
      const std::uint64_t behind_call = proto::decode_task_head(behind).call;
      const std::int32_t behind_x = argument_of(behind);
      if (behind_x == 3 && !record_run()) return 3;
      answer_inline(call, value);
      answer_inline(behind_call, behind_x * behind_x);
    } else if (mode == "bye_first") {
      if (!record_run()) return 3;
      send(proto::encode_bye(proto::ByeReason::memory_growth));
      return 0;
    } else if (mode == "bye_running") {
      send(proto::encode_bye(proto::ByeReason::max_tasks));
      for (;;) ::pause();
    } else if (mode == "partial_die") {
      if (::fork() == 0) {
        // Holds the channel open until the host closes its end (at most 30 s), reading nothing.
        pollfd p{channel, 0, 0};
        ::poll(&p, 1, 30000);
        std::_Exit(0);
      }
      Buffer head = proto::encode_result_head({call, proto::ResultStatus::ok, {}}, sizeof value);
      if (::write(channel, head.data(), 20) != 20) return 3;
      std::_Exit(1);
    } else if (mode == "partial_hang") {
      Buffer head = proto::encode_result_head({call, proto::ResultStatus::ok, {}}, sizeof value);
      Buffer part;
      part.append(head.data(), 20);
      if (!send(part)) return 3;
      for (;;) ::pause();
    } else if (mode == "hello_again") {
      send(hello("fakehost"));
    } else if (mode == "init_ack_again") {
      send(proto::encode_result_head({0, proto::ResultStatus::ok, {}}, 0));
    } else if (mode == "init_failed") {
      send(ferry::detail::encode_failure(
          0, ferry::detail::Failure::in_stage(ferry::detail::InvokeStatus::task_threw, 0, "std::runtime_error",
                                              "an initializer failure, long after start", ""),
          proto::ResultStatus::init_failed));
    } else if (mode == "out_of_order") {
      held = call;
    } else if (mode == "crash_flood") {
      ferry::detail::Crashed c;
      c.pid = 1;
      c.signal = SIGSEGV;
      for (int i = 0; i < 5000; ++i) send(ferry::detail::encode_crashed(c));
      for (;;) ::pause();
    } else if (mode == "claim_huge") {
      // Within FERRY_MAX_FRAME_BYTES (1 GiB by default): the size alone is no protocol error.
      constexpr std::uint64_t claimed = std::uint64_t{768} << 20;
      Buffer head = proto::encode_result_head({call, proto::ResultStatus::ok, {}}, claimed);
      send(head, std::string(std::size_t{1} << 20, 'x'));
      std::_Exit(1);
    } else if (mode == "ring_head" && control_to_agent) {
      // Once the agent has read the hello (else that is lost with the ring, and the host sees a
      // worker that never started): the task may come before it.
      while (control_to_agent->tail.load() != control_to_agent->head.load()) ::sched_yield();
      control_to_agent->head.store(control_to_agent->head.load() + (std::uint64_t{1} << 40));
      if (control_to_agent->consumer_waiting.load()) (void)::send(channel, "", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else if (mode == "ring_tail" && control_to_worker) {
      answer_inline(call, value);
      control_to_worker->tail.store(control_to_worker->tail.load() + (std::uint64_t{1} << 40));
      for (;;) ::pause();  // reading again would store the true tail back
    } else if (mode == "huge_times") {
      const proto::RunStats huge{UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
      send(proto::encode_result_head({call, proto::ResultStatus::ok, huge}, sizeof value),
           std::string_view(reinterpret_cast<const char*>(&value), sizeof value));
    } else {
      answer_inline(call, value);
    }
  }
}
