// SPDX-License-Identifier: BSD-3-Clause
// Helpers shared by the MPI hub (host) and the node agents.
#include "wire.hpp"

#include "platform/config.hpp"
#include "platform/debug.hpp"
#include "platform/format.hpp"
#include "platform/hash.hpp"
#include "wire/failure.hpp"
#include "wire/shm.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <ferry/detail/type_name.hpp>

namespace ferry::mpi::detail {

namespace proto = ferry::detail::protocol;

// FERRY_MPI_TIMEOUT_MS is at least 1000, four of these (platform/config.cpp).
std::chrono::milliseconds heartbeat_period() { return std::chrono::milliseconds(250); }

std::chrono::milliseconds peer_timeout() {
  static const std::chrono::milliseconds t = ferry::detail::Config::read().mpi_timeout;
  return t;
}

void ignore_sigpipe() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && !(current.sa_flags & SA_SIGINFO) &&
      current.sa_handler == SIG_DFL)
    ::signal(SIGPIPE, SIG_IGN);
}

std::atomic<bool>& ferry_initialised_mpi() {
  static std::atomic<bool> yes{false};
  return yes;
}

bool under_slurm_pmix() {
  const char* ns = std::getenv("PMIX_NAMESPACE");
  return ns && std::string_view(ns).starts_with("slurm.pmix.");
}

std::string leave_pmix_server() {
  // The library Open MPI loaded, not a second copy: RTLD_NOLOAD finds it or nothing.
  void* lib = ::dlopen("libpmix.so.2", RTLD_NOW | RTLD_NOLOAD);
  if (!lib) return "libpmix.so.2 is not loaded in this process";
  using Finalize = int (*)(const void* info, std::size_t ninfo);
  using Initialized = int (*)();
  auto finalize = reinterpret_cast<Finalize>(::dlsym(lib, "PMIx_Finalize"));
  auto initialized = reinterpret_cast<Initialized>(::dlsym(lib, "PMIx_Initialized"));
  std::string why;
  if (!finalize || !initialized) {
    why = "libpmix.so.2 has no PMIx_Finalize or PMIx_Initialized";
  } else {
    // PMIx counts its initialisations; the session ends when the count reaches zero.
    for (int i = 0; i < 8 && initialized(); ++i)
      if (int rc = finalize(nullptr, 0); rc != 0) {
        why = "PMIx_Finalize returned " + std::to_string(rc);
        break;
      }
    if (why.empty() && initialized()) why = "PMIx is still initialised after 8 PMIx_Finalize calls";
  }
  ::dlclose(lib);
  return why;
}

void prepare_mpi_environment() {
  ::setenv("OMPI_MCA_mpi_event_tick_rate", "1", 0);
  ::setenv("OMPI_MCA_btl_tcp_progress_thread", "0", 0);
  ::setenv("OMPI_MCA_orte_enable_recovery", "1", 0);
  ::setenv("OMPI_MCA_mpi_yield_when_idle", "0", 0);
  ignore_sigpipe();
}

Buffer pack_strings(const std::vector<std::string>& items) {
  Buffer b;
  proto::BodyWriter w(b);
  w.u32(static_cast<std::uint32_t>(items.size()));
  for (const auto& s : items) w.str(s);
  return b;
}

std::vector<std::string> unpack_strings(std::string_view body) {
  proto::BodyReader r(body);
  std::uint32_t n = r.u32();
  std::vector<std::string> out;
  for (std::uint32_t i = 0; i < n; ++i) out.push_back(r.str());
  return out;
}

std::string content_key(const std::filesystem::path& file) {
  return ferry::detail::file_content_key(file).value_or("");
}

bool is_content_key(std::string_view key) {
  return key.size() == 64 && std::all_of(key.begin(), key.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

Buffer frame_bytes(const ferry::detail::Frame& f) {
  Buffer out(proto::header_size);
  proto::write_header(out.data(), f.header.type, f.body.size(),
                      static_cast<std::uint8_t>(f.header.flags & ~proto::flag_shm));
  out.append(f.body.data(), f.body.size());
  return out;
}

Buffer unrelayed_answer(std::string_view frame, const std::string& why) {
  if (frame.size() < proto::header_size) return {};
  auto h = proto::parse_header(frame.data(), UINT64_MAX);
  bool task = h.type == proto::FrameType::task;
  if (!task && h.type != proto::FrameType::result) return {};
  proto::BodyReader r(frame.substr(proto::header_size));
  std::uint64_t call = task ? proto::decode_task_head(r).call : proto::decode_result_head(r).call;
  // The stage whose bytes could not travel: the host reports it as that SerializationError.
  auto stage = task ? ferry::detail::InvokeStatus::decode_arguments_failed
                    : ferry::detail::InvokeStatus::encode_result_failed;
  Buffer answer = ferry::detail::encode_failure(
      call, ferry::detail::Failure::in_stage(
                stage, 0, "MPI relay",
                std::string(task ? "the arguments" : "the result") +
                    " could not travel over MPI: " + why,
                ""));
  // A worker's last answer stays its last: the bye behind it hands back nothing (Pool::handle_result).
  if (!task && (h.flags & proto::flag_last)) proto::mark_last_answer(answer);
  return answer;
}

std::string lost_reason(const std::string& where) {
  return "it did not arrive whole on " + where +
         " (no memory for it there, or a chunk failed; FERRY_DEBUG=1 there says which)";
}

void push_passed(ferry::detail::Outbox& out, Buffer head, std::shared_ptr<SharedBytes> payload) {
  const int fd = payload->fd();
  auto passed = std::make_shared<PassedPayload>();
  passed->head = head;  // a copy: the outbox sends its own
  passed->bytes = std::move(payload);
  out.push(std::move(head), fd, std::move(passed));
}

bool send_inline_instead(ferry::detail::Outbox& out, std::uint64_t max_body, Buffer& refused) {
  refused = Buffer();
  std::shared_ptr<const void> keep = out.unsent_passing_front();
  if (!keep) return false;
  // Every descriptor on such an outbox came with a PassedPayload (push_passed).
  const auto& passed = *static_cast<const PassedPayload*>(keep.get());
  const Buffer& shared = passed.head;
  if (shared.size() < proto::header_size + proto::shared_size_bytes) return false;
  const auto h = proto::parse_header(shared.data(), UINT64_MAX);
  const std::size_t fixed = shared.size() - proto::header_size - proto::shared_size_bytes;
  const std::uint64_t body = fixed + passed.bytes->size();
  if (body > max_body) {
    refused = shared;
    return false;
  }
  Buffer head(proto::header_size);
  proto::write_header(head.data(), h.type, body, static_cast<std::uint8_t>(h.flags & ~proto::flag_shm));
  head.append(shared.data() + proto::header_size, fixed);
  ferry::detail::debug_log("mpi: a memfd of %zu bytes could not be passed (%s): its bytes go inline",
                           passed.bytes->size(), std::strerror(ETOOMANYREFS));
  out.replace_front(std::move(head), passed.bytes->view(), std::move(keep));
  return true;
}

std::string refused_reason(const std::string& whom, const Buffer& refused, std::uint64_t max_body) {
  const std::uint64_t bytes =
      refused.size() < proto::shared_size_bytes
          ? 0
          : proto::BodyReader(refused.view().substr(refused.size() - proto::shared_size_bytes)).u64();
  return "its shared memory could not be passed to " + whom + " (" + std::strerror(ETOOMANYREFS) +
         ": this user's descriptors in flight on UNIX sockets are past the sender's RLIMIT_NOFILE) and its " +
         ferry::detail::format_size(bytes) + " fit no frame (" + ferry::detail::format_size(max_body) +
         ": FERRY_MAX_FRAME_BYTES)";
}

// ---- SharedBytes ---------------------------------------------------------------------------

std::shared_ptr<SharedBytes> SharedBytes::create(std::size_t n) {
  int fd = ::memfd_create("ferry-mpi-payload", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return nullptr;
  char* data = nullptr;
  if (n > 0) {
    void* p = MAP_FAILED;
    // Sealed against shrinking, as a worker's result must be: the pool and a worker map only
    // such blocks (Buffer::map_shared).
    if (::ftruncate(fd, static_cast<off_t>(n)) == 0 && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0)
      p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return nullptr;
    }
    data = static_cast<char*>(p);
  }
  return std::shared_ptr<SharedBytes>(new SharedBytes(fd, data, n));
}

std::shared_ptr<SharedBytes> SharedBytes::map(int fd, std::size_t n) {
  // As Buffer::map_shared (shared_payload_problem): only a memfd its sender can no longer
  // shrink, with the memory it announces behind it, not in huge pages. MPI reads the mapping
  // while it sends, long after this check: a worker that truncated its block then would end the
  // agent (or the hub) with SIGBUS, and a sparse one would have the agent read (and the hub
  // allocate) a terabyte its worker never paid for.
  if (std::string why = ferry::detail::shared_payload_problem(fd, n); !why.empty()) {
    ::close(fd);
    throw std::runtime_error(why);
  }
  char* data = nullptr;
  if (n > 0) {
    // No MAP_POPULATE: setting up the page tables of 2 GiB at once takes about a second.
    void* p = ::mmap(nullptr, n, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw std::runtime_error(std::string("cannot map the shared payload: ") + std::strerror(e));
    }
    data = static_cast<char*>(p);
  }
  return std::shared_ptr<SharedBytes>(new SharedBytes(fd, data, n));
}

bool SharedBytes::reserve(std::size_t at, std::size_t n) {
  if (n == 0) return true;
  int rc;
  do {
    rc = ::fallocate(fd_, 0, static_cast<off_t>(at), static_cast<off_t>(n));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    ferry::detail::debug_log("mpi: no memory for %zu bytes of a payload of %zu: %s", n, size_,
                             std::strerror(errno));
    return false;
  }
  return true;
}

SharedBytes::~SharedBytes() {
  if (data_) ::munmap(data_, size_);
  ::close(fd_);
}

// ---- FrameForwarder ------------------------------------------------------------------------

std::uint64_t FrameForwarder::default_max_frame() {
  return std::max(ferry::detail::Config::read().max_frame_bytes, proto::default_max_frame);
}

namespace {

/// The head of a frame sent apart from its payload: the frame's header (flag_shm, body = `fixed`
/// + the payload's size) and the first bytes of its body.
Buffer shared_head(const proto::FrameHeader& h, std::string_view fixed, std::uint64_t payload) {
  Buffer b(proto::header_size);
  proto::write_header(b.data(), h.type, fixed.size() + proto::shared_size_bytes,
                      static_cast<std::uint8_t>(h.flags | proto::flag_shm));
  b.append(fixed.data(), fixed.size());
  proto::BodyWriter(b).u64(payload);
  return b;
}

/// Where the payload of an inline frame starts in its body; 0 when it has none to split off.
std::size_t payload_offset(const proto::FrameHeader& h, std::string_view body) {
  if (h.type == proto::FrameType::task)
    return body.size() >= proto::task_head_size ? proto::task_head_size : 0;
  if (h.type != proto::FrameType::result || body.size() < proto::result_head_size) return 0;
  proto::BodyReader r(body);
  bool ok = proto::decode_result_head(r).status == proto::ResultStatus::ok;
  return ok ? proto::result_head_size : 0;
}

}  // namespace

bool FrameForwarder::pump(int fd, std::vector<OutFrame>& out, std::vector<Buffer>& back) {
  for (int round = 0; round < 64; ++round) {
    ssize_t n = reader_.fill(fd, MSG_DONTWAIT);
    forward_ready(out, back);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    // A short read emptied the socket (or ended a large body): the rest, if any, next time. Saves
    // the read that would only say EAGAIN, one system call per relayed frame.
    if (n < static_cast<ssize_t>(short_read)) return true;
  }
  return true;
}

bool FrameForwarder::pump(const std::function<ssize_t(char*, std::size_t)>& read,
                          std::vector<OutFrame>& out, std::vector<Buffer>& back) {
  for (int round = 0; round < 64; ++round) {
    ssize_t n = reader_.fill(read);
    forward_ready(out, back);
    if (n < 0) return false;
    if (n == 0) return true;
  }
  return true;
}

void FrameForwarder::take(std::span<const std::string_view> pieces, std::vector<OutFrame>& out,
                          std::vector<Buffer>& back) {
  if (!reader_.feed(pieces)) throw proto::ProtocolError("frames handed over in the middle of one");
  forward_ready(out, back);
}

void FrameForwarder::forward_ready(std::vector<OutFrame>& out, std::vector<Buffer>& back) {
  ferry::detail::Frame f;
  while (reader_.next(f)) {
    if ((f.header.flags & proto::flag_shm) && (f.fd || f.fd_lost)) {
      // A payload in a memfd cannot cross nodes: it is mapped and sent from there, in chunks.
      // The body's last 8 bytes are its size.
      if (f.body.size() < proto::shared_size_bytes)
        throw proto::ProtocolError("shared-memory frame without a size");
      std::size_t fixed = f.body.size() - proto::shared_size_bytes;
      std::uint64_t size = proto::BodyReader(f.view().substr(fixed)).u64();
      std::shared_ptr<SharedBytes> mapped;
      try {
        // Dropped by the kernel: this process had no descriptor left for it (not the sender's
        // fault; the frame's call fails, as one that cannot be mapped).
        if (f.fd_lost) throw std::runtime_error(std::string("no descriptor left here to receive it (") +
                                                std::strerror(EMFILE) + ")");
        mapped = SharedBytes::map(f.fd.release(), size);
      } catch (const std::exception& e) {
        std::string why = "cannot map its " + ferry::detail::format_size(size) + ": " + e.what();
        Buffer answer = unrelayed_answer(frame_bytes(f).view(), why);
        if (answer.empty()) throw proto::ProtocolError(why);
        if (f.header.type == proto::FrameType::task) {
          back.push_back(std::move(answer));
        } else {
          out.push_back(OutFrame{std::move(answer), {}, {}});
        }
        continue;
      }
      OutFrame o;
      o.bytes = shared_head(f.header, f.view().substr(0, fixed), size);
      o.payload = mapped->view();
      o.keep = std::move(mapped);
      out.push_back(std::move(o));
      continue;
    }
    std::uint64_t bytes = proto::header_size + f.body.size();
    if (bytes <= largest_message_) {
      out.push_back(OutFrame{frame_bytes(f), {}, {}});
      continue;
    }
    // Too large for one message: the payload goes in chunks from where it was read.
    std::size_t fixed = payload_offset(f.header, f.view());
    if (fixed == 0)
      throw proto::ProtocolError("a frame of " + ferry::detail::format_size(bytes) +
                                 " is larger than one MPI message can carry");
    auto body = std::make_shared<Buffer>(std::move(f.body));
    OutFrame o;
    o.bytes = shared_head(f.header, body->view().substr(0, fixed), body->size() - fixed);
    o.payload = body->view().substr(fixed);
    o.keep = std::move(body);
    out.push_back(std::move(o));
  }
}

// ---- FrameBatch -----------------------------------------------------------------------------

void FrameBatch::add(OutFrame frame, Sender& sender, int dest, MPI_Comm comm) {
  if (frame.chunked() || frame.bytes.size() > batch_bytes) {
    flush(sender, dest, comm);
    sender.send(std::move(frame), dest, tag_frames, comm);
    return;
  }
  if (bytes_.size() + frame.bytes.size() > batch_bytes) flush(sender, dest, comm);
  if (bytes_.empty()) {
    bytes_ = std::move(frame.bytes);
  } else {
    bytes_.append(frame.bytes.data(), frame.bytes.size());
  }
}

void FrameBatch::flush(Sender& sender, int dest, MPI_Comm comm) {
  if (bytes_.empty()) return;
  sender.send(std::move(bytes_), dest, tag_frames, comm);
  bytes_ = Buffer();
}

std::vector<Buffer> split_frames(Buffer message) {
  std::vector<Buffer> out;
  std::string_view rest = message.view();
  while (!rest.empty()) {
    if (rest.size() < proto::header_size) throw proto::ProtocolError("a partial frame in a batch");
    auto h = proto::parse_header(rest.data(), UINT64_MAX);
    if (h.size > rest.size() - proto::header_size) throw proto::ProtocolError("a partial frame in a batch");
    std::size_t n = proto::header_size + static_cast<std::size_t>(h.size);
    if (n == rest.size() && out.empty()) {
      out.push_back(std::move(message));  // one frame: no split
      return out;
    }
    Buffer b;
    b.append(rest.data(), n);
    out.push_back(std::move(b));
    rest.remove_prefix(n);
  }
  return out;
}

// ---- Sender --------------------------------------------------------------------------------

void Sender::post(std::unique_ptr<InFlight> s, const char* data, std::size_t size, int dest,
                  int tag, MPI_Comm comm) {
  // Callers keep sizes within an int: whole messages up to max_message_bytes, chunks smaller.
  int rc = MPI_Isend(data, static_cast<int>(size), MPI_BYTE, dest, tag, comm, &s->request);
  // A failed send (the peer is gone) is dropped: the heartbeat deadline reports the peer.
  if (rc != MPI_SUCCESS) return;
  s->comm = comm;
  s->dest = dest;
  buffered_ += s->bytes.size();
  inflight_.push_back(std::move(s));
  last_moved_ = std::chrono::steady_clock::now();
}

void Sender::abandon(MPI_Comm comm, int dest) {
  for (auto& s : inflight_)
    if (!s->abandoned && s->comm == comm && s->dest == dest) {
      s->abandoned = true;
      ++abandoned_;
    }
}

void Sender::send(Buffer bytes, int dest, int tag, MPI_Comm comm) {
  auto s = std::make_unique<InFlight>();
  s->bytes = std::move(bytes);
  const char* data = s->bytes.data();
  std::size_t size = s->bytes.size();
  post(std::move(s), data, size, dest, tag, comm);
}

void Sender::send(OutFrame frame, int dest, int tag, MPI_Comm comm) {
  if (!frame.chunked()) return send(std::move(frame.bytes), dest, tag, comm);
  ferry::detail::debug_log("mpi: a frame of %s to rank %d goes in chunks of %s",
                           ferry::detail::format_size(frame.payload.size()).c_str(), dest,
                           ferry::detail::format_size(chunk_bytes_).c_str());
  Buffer head = std::move(frame.bytes);
  proto::BodyWriter(head).u64(chunk_bytes_);
  send(std::move(head), dest, tag_frame_head, comm);
  // In order: the receiver posts one receive per chunk, matched in the order they were sent.
  for (std::size_t at = 0; at < frame.payload.size(); at += chunk_bytes_) {
    auto s = std::make_unique<InFlight>();
    s->keep = frame.keep;
    post(std::move(s), frame.payload.data() + at, std::min(chunk_bytes_, frame.payload.size() - at),
         dest, tag_frame_chunk, comm);
  }
}

bool Sender::progress() {
  for (std::size_t i = 0; i < inflight_.size();) {
    int done = 0;
    int rc = MPI_Test(&inflight_[i]->request, &done, MPI_STATUS_IGNORE);
    if (done || rc != MPI_SUCCESS) {
      if (inflight_[i]->abandoned)
        --abandoned_;
      else
        last_moved_ = std::chrono::steady_clock::now();
      buffered_ -= std::min(buffered_, inflight_[i]->bytes.size());
      inflight_[i] = std::move(inflight_.back());
      inflight_.pop_back();
    } else {
      ++i;
    }
  }
  return inflight_.empty();
}

// ---- Receiver ------------------------------------------------------------------------------

namespace {
/// Memory MPI may still write into when nothing waits for it any more (a chunk's payload, a
/// whole message's bytes): kept for good.
void leave_for_mpi(std::shared_ptr<SharedBytes> payload, Buffer bytes) {
  static auto* kept = new std::vector<std::shared_ptr<SharedBytes>>();
  static auto* kept_bytes = new std::vector<Buffer>();
  if (payload) kept->push_back(std::move(payload));
  if (!bytes.empty()) kept_bytes->push_back(std::move(bytes));
}
}  // namespace

Receiver::~Receiver() {
  for (auto& s : streams_)
    for (auto& in : s.queue)
      if (!in.requests.empty()) leave_for_mpi(std::move(in.payload), std::move(in.bytes));
  for (auto& in : abandoned_) leave_for_mpi(std::move(in.payload), std::move(in.bytes));
}

std::size_t Receiver::arriving() const {
  std::size_t n = 0;
  for (const auto& s : streams_)
    for (const auto& in : s.queue) n += !in.complete();
  return n;
}

std::uint64_t Receiver::max_arriving_bytes() {
  static const std::uint64_t bytes = [] {
    long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return std::uint64_t{64} << 30;
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
  }();
  return bytes;
}

Receiver::Stream& Receiver::stream_of(MPI_Comm comm, int source) {
  for (auto& s : streams_)
    if (s.comm == comm && s.source == source) return s;
  streams_.push_back(Stream{comm, source, {}});
  return streams_.back();
}

void Receiver::hold(Stream& s, Incoming in) {
  if (in.chunked) {
    s.arriving_bytes += in.size;
  } else {
    s.held_bytes += in.held_bytes();
    ++s.held;
  }
  s.queue.push_back(std::move(in));
}

Receiver::Incoming Receiver::pop_front(Stream& s) {
  Incoming in = std::move(s.queue.front());
  s.queue.pop_front();
  if (in.chunked) {
    s.arriving_bytes -= std::min(s.arriving_bytes, in.size);
  } else {
    s.held_bytes -= std::min(s.held_bytes, in.held_bytes());
    s.held -= std::min<std::size_t>(s.held, 1);
  }
  return in;
}

Receiver::Incoming Receiver::start_frame(int source, Buffer head, std::uint64_t room, std::string& refused) {
  Incoming in;
  // The head: a shared-memory frame (header, fixed part, the payload's size), then the chunk size.
  try {
    if (head.size() < proto::header_size) throw proto::ProtocolError("short frame head");
    auto h = proto::parse_header(head.data(), proto::max_control_frame);
    std::size_t frame_size = proto::header_size + h.size;
    if (!(h.flags & proto::flag_shm) || h.size < proto::shared_size_bytes ||
        head.size() != frame_size + 8)
      throw proto::ProtocolError("malformed frame head");
    in.size = proto::BodyReader(head.view().substr(frame_size - proto::shared_size_bytes)).u64();
    in.chunk = proto::BodyReader(head.view().substr(frame_size)).u64();
    if (in.chunk == 0 || in.chunk > max_message_bytes) throw proto::ProtocolError("bad chunk size");
    head.resize(frame_size);
  } catch (const proto::ProtocolError& e) {
    // Not from a ferry peer. Dropped, as a message of an unknown tag would be.
    ferry::detail::debug_log("mpi: dropped a frame head from rank %d: %s", source, e.what());
    return in;
  }
  if (in.size > room) {
    refused = "frames announcing " + ferry::detail::format_size(in.size) + " more while " +
              ferry::detail::format_size(max_arriving_bytes() - room) +
              " of theirs arrive, past this machine's memory (" +
              ferry::detail::format_size(max_arriving_bytes()) + ")";
    return in;
  }
  in.chunked = true;
  in.tag = tag_frames;
  in.bytes = std::move(head);
  in.payload = allocate_(in.size);
  in.draining = !in.payload;  // no memory for it: its chunks are drained, the frame reported lost
  in.began = std::chrono::steady_clock::now();
  ferry::detail::debug_log("mpi: a frame of %s from rank %d arrives in chunks of %s",
                           ferry::detail::format_size(in.size).c_str(), source,
                           ferry::detail::format_size(in.chunk).c_str());
  return in;
}

int Receiver::receive_chunk(Stream* stream, MPI_Message& message, int count) {
  auto n = static_cast<std::uint64_t>(count);
  // Only a chunk received into its frame is news of its source, and restarts its stall clock: a
  // peer dripping chunks that are dropped (owed, of a lost frame, or of the wrong size) must not
  // keep what waits behind them, or itself, alive.
  // Still owed by frames given up on (stalled): dropped, or it would land in a later frame.
  if (stream && stream->owed > 0) {
    stream->owed -= std::min(stream->owed, n);
    discard(message, count);
    return tag_pending;
  }
  // The chunks of a source, in the order it sent them, fill its oldest frame still expecting some.
  Incoming* in = nullptr;
  if (stream)
    for (auto& i : stream->queue)
      if (i.chunked && i.matched < i.size) {
        in = &i;
        break;
      }
  if (in && !in->draining) {
    std::uint64_t expected = std::min(in->chunk, in->size - in->matched);
    if (n != expected) {
      ferry::detail::debug_log("mpi: a chunk of %d bytes where %llu were expected", count,
                               static_cast<unsigned long long>(expected));
      in->draining = true;
    } else if (!in->payload->reserve(in->matched, n)) {
      in->draining = true;  // no memory for it: the frame is lost
    } else {
      MPI_Request r = MPI_REQUEST_NULL;
      char* into = in->payload->data() + in->matched;
      in->matched += n;
      if (MPI_Imrecv(into, count, MPI_BYTE, &message, &r) == MPI_SUCCESS) {
        in->requests.push_back(r);
        last_moved_ = std::chrono::steady_clock::now();
        stream->last_chunk = last_moved_;
        return tag_pending;  // news once its bytes are here (next() tests it)
      }
      ferry::detail::debug_log("mpi: a chunk receive failed");
      in->draining = true;
      return tag_pending;
    }
  }
  // Nothing to keep it for (a lost frame, a forgotten source, or not the size expected): dropped
  // unread, into no memory of its size. A chunk of the size its lost frame expects is its
  // source's honest progress (the frame then ends as lost, not as stalled).
  discard(message, count);
  if (!in) return tag_pending;
  const bool as_expected = n == std::min(in->chunk, in->size - in->matched);
  in->matched = std::min(in->size, in->matched + n);
  if (!as_expected) return tag_pending;
  stream->last_chunk = std::chrono::steady_clock::now();
  return tag_progress;
}

void Receiver::discard(MPI_Message& message, MPI_Count size) {
  // Into 1 MiB of scratch that nobody reads, whatever the size: a message of up to that much
  // into it as bytes, a larger one through a datatype that lays every MiB over the same scratch
  // (a stride of 0). Never a receive shorter than the message, which MPI would complete as
  // truncated: Open MPI 4.1 then still writes the whole message when its bytes come by RDMA
  // (tried: a receive of 16 bytes for 100 kB over TCP wrote past them and crashed, over shared
  // memory CMA's copy went past them too, stopped there only by a guard page). A datatype that
  // is not contiguous makes Open MPI copy the bytes in through it; tried over shared memory and
  // TCP with 3 GiB, sent contiguous and with a stride of 0. Not waited for: over TCP the bytes
  // still cross (3 GiB took 3 s), moved by the loops' later calls.
  constexpr std::size_t block = std::size_t{1} << 20;
  static char* scratch = new char[block];  // never freed: a receive may still write into it at exit
  MPI_Request r = MPI_REQUEST_NULL;
  int rc = MPI_ERR_COUNT;
  if (size >= 0 && static_cast<std::uint64_t>(size) <= block) {
    rc = MPI_Imrecv(scratch, static_cast<int>(size), MPI_BYTE, &message, &r);
  } else if (size > 0 && static_cast<std::uint64_t>(size) / block < static_cast<std::uint64_t>(INT_MAX)) {
    MPI_Datatype mib = MPI_DATATYPE_NULL, many = MPI_DATATYPE_NULL;
    if (MPI_Type_contiguous(static_cast<int>(block), MPI_BYTE, &mib) == MPI_SUCCESS &&
        MPI_Type_create_hvector(static_cast<int>((static_cast<std::uint64_t>(size) + block - 1) / block), 1, 0,
                                mib, &many) == MPI_SUCCESS &&
        MPI_Type_commit(&many) == MPI_SUCCESS)
      rc = MPI_Imrecv(scratch, 1, many, &message, &r);
    // MPI keeps what a posted receive needs.
    if (many != MPI_DATATYPE_NULL) MPI_Type_free(&many);
    if (mib != MPI_DATATYPE_NULL) MPI_Type_free(&mib);
  }
  // Not received (a size MPI cannot say, or no datatype for it): left matched, what MPI already
  // took in of it kept; the sender's send may never complete.
  if (rc != MPI_SUCCESS) ferry::detail::debug_log("mpi: a message of %lld bytes could not be dropped", static_cast<long long>(size));
  if (rc == MPI_SUCCESS && r != MPI_REQUEST_NULL) discards_.push_back(r);
  last_moved_ = std::chrono::steady_clock::now();
}

void Receiver::reap_discards() {
  for (std::size_t i = 0; i < discards_.size();) {
    int done = 0;
    int rc = MPI_Test(&discards_[i], &done, MPI_STATUS_IGNORE);
    if (done || rc != MPI_SUCCESS) {
      discards_[i] = discards_.back();
      discards_.pop_back();
      last_moved_ = std::chrono::steady_clock::now();
    } else {
      ++i;
    }
  }
}

bool Receiver::test(Incoming& in) {
  bool progressed = false;
  for (std::size_t i = 0; i < in.requests.size();) {
    int done = 0;
    int rc = MPI_Test(&in.requests[i], &done, MPI_STATUS_IGNORE);
    if (done || rc != MPI_SUCCESS) {
      if (rc != MPI_SUCCESS) {
        ferry::detail::debug_log("mpi: a chunk receive failed (%d)", rc);
        in.draining = true;  // the frame cannot be whole
      }
      in.requests[i] = in.requests.back();
      in.requests.pop_back();
      progressed = true;
    } else {
      ++i;
    }
  }
  return progressed;
}

void Receiver::reap_abandoned() {
  for (std::size_t i = 0; i < abandoned_.size();) {
    test(abandoned_[i]);
    if (abandoned_[i].requests.empty()) {
      abandoned_[i] = std::move(abandoned_.back());
      abandoned_.pop_back();
    } else {
      ++i;
    }
  }
}

void Receiver::forget(MPI_Comm comm, int source) {
  if (std::find(forgotten_.begin(), forgotten_.end(), std::make_pair(comm, source)) == forgotten_.end())
    forgotten_.emplace_back(comm, source);
  for (auto it = streams_.begin(); it != streams_.end(); ++it) {
    if (it->comm != comm || it->source != source) continue;
    for (auto& in : it->queue) {
      // A matched receive cannot be cancelled: its memory stays until MPI is done with it (for
      // good, if the peer died in the middle of a chunk).
      if (!in.requests.empty()) abandoned_.push_back(std::move(in));
    }
    streams_.erase(it);
    return;
  }
}

namespace {
Buffer text(const std::string& s) {
  Buffer b;
  b.append(s.data(), s.size());
  return b;
}
}  // namespace

void Receiver::deliver(MPI_Comm comm, int source, Incoming in, int& tag, Buffer& bytes) {
  auto found = std::find_if(streams_.begin(), streams_.end(),
                            [&](const Stream& s) { return s.comm == comm && s.source == source; });
  Stream* stream = found == streams_.end() ? nullptr : &*found;
  if (in.tag == tag_frame_head) {
    // A source declared dead may still be sending: its frames are received and dropped (their
    // chunks with them, as chunks of no frame), never kept as arriving.
    if (std::find(forgotten_.begin(), forgotten_.end(), std::make_pair(comm, source)) != forgotten_.end()) {
      tag = tag_pending;
      return;
    }
    // Frames of one source arriving at once: an honest peer has at most its pipeline's (16
    // calls) and a few results; more is a peer that opens frames without sending their bytes,
    // each a memfd and a mapping here.
    if (stream && stream->queue.size() >= max_frames_arriving) {
      tag = tag_unreadable;
      bytes = text("more than " + std::to_string(max_frames_arriving) + " frames of one source arriving at once");
      return;
    }
    // A frame begun behind one still arriving is no news, nor a new start of its stall clock:
    // a peer sending a head now and then must not keep a frame it never sends alive.
    const bool behind = stream && stream->waiting();
    std::string refused;
    const std::uint64_t room = max_arriving_bytes() - std::min(max_arriving_bytes(), stream ? stream->arriving_bytes : 0);
    Incoming frame = start_frame(source, std::move(in.bytes), room, refused);
    if (!refused.empty()) {
      tag = tag_unreadable;
      bytes = text(refused);
      return;
    }
    if (frame.chunked) {
      last_moved_ = std::chrono::steady_clock::now();
      Stream& s = stream_of(comm, source);
      if (!behind) s.last_chunk = last_moved_;
      hold(s, std::move(frame));
    }
    tag = behind ? tag_pending : tag_progress;
    return;
  }
  if (in.tag == tag_heartbeat) {
    // Never held behind a frame still arriving: it orders nothing, and says the source is alive
    // while a large frame's bytes cross a slow link.
    tag = tag_heartbeat;
    return;
  }
  if (stream && !stream->queue.empty()) {
    // Sent after a frame still arriving: it waits for it, and is no news of its source until it
    // comes out (is_news).
    hold(*stream, std::move(in));
    tag = tag_pending;
    return;
  }
  tag = in.tag;
  bytes = std::move(in.bytes);
}

bool Receiver::next_heartbeat(MPI_Comm comm, int& source) {
  int flag = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Status st;
  if (MPI_Improbe(MPI_ANY_SOURCE, tag_heartbeat, comm, &flag, &message, &st) != MPI_SUCCESS || !flag)
    return false;
  source = st.MPI_SOURCE;
  MPI_Count size = -1;
  MPI_Get_elements_x(&st, MPI_BYTE, &size);
  if (size == 0) {
    MPI_Mrecv(nullptr, 0, MPI_BYTE, &message, MPI_STATUS_IGNORE);
  } else {
    discard(message, size);
  }
  return true;
}

bool Receiver::next(MPI_Comm comm, int& source, int& tag, Buffer& bytes) {
  last_payload_.reset();
  if (!abandoned_.empty()) reap_abandoned();
  if (!discards_.empty()) reap_discards();
  const auto now = std::chrono::steady_clock::now();
  // Sources with a frame arriving (or a whole message still being received, or messages held
  // behind one): the oldest message comes out once it is complete.
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    Stream& s = streams_[i];
    if (s.comm != comm) continue;
    bool progressed = false;
    for (auto& in : s.queue) progressed = test(in) || progressed;
    if (progressed) {
      last_moved_ = now;
      s.last_chunk = now;
    } else if (s.waiting() && now - s.last_chunk > stall_limit_ + s.chunk_time()) {
      // No chunk of its frames for the stall limit (and the time a chunk takes at 1 MiB/s: a
      // slow or shared link is no stall): the source began them and stopped sending their bytes
      // (or died). They are given up on, and what it sent after them comes out; the hub refuses
      // such a rank, an agent answers the task as lost. Without this, every later message of the
      // source waited behind them for good. A whole message whose bytes stopped coming is given
      // up on the same way (MPI_Mrecv waited for them: a rank that sent 64 MiB over TCP and
      // stopped calling MPI froze the hub's thread).
      ferry::detail::debug_log("mpi: no chunk from rank %d for %lld ms: its frames still arriving are dropped",
                               s.source, static_cast<long long>((stall_limit_ + s.chunk_time()).count()));
      for (auto& in : s.queue)
        if (!in.complete()) in.stalled = in.draining = true;
    }
    source = s.source;
    bytes.clear();
    if (s.queue.empty()) {  // only chunks owed by frames given up on
      if (s.owed == 0) streams_.erase(streams_.begin() + static_cast<std::ptrdiff_t>(i--));
      continue;
    }
    Incoming& front = s.queue.front();
    bool out = false;
    if (front.stalled) {
      Incoming gone = pop_front(s);
      tag = tag_frame_stalled;
      // A frame's head (an agent answers its task as lost); nothing of a whole message.
      if (gone.chunked) bytes = std::move(gone.bytes);
      s.owed += gone.size - gone.matched;
      // A matched receive cannot be cancelled: its memory stays until MPI is done with it.
      if (!gone.requests.empty()) abandoned_.push_back(std::move(gone));
      out = true;
    } else if (front.complete() && front.late) {
      // A whole message whose bytes came after it was matched: what it is decides now, in its
      // place in the source's order. deliver() sees its source with nothing in front of it (a
      // frame head begins its frame first in the queue); what came after it goes back behind.
      Incoming in = pop_front(s);
      std::deque<Incoming> after;
      after.swap(s.queue);
      s.held = 0;
      s.held_bytes = 0;
      s.arriving_bytes = 0;
      if (in.draining) {
        tag = tag_unreadable;
        bytes = text("a message of tag " + std::to_string(in.tag) + " could not be received");
      } else {
        in.late = false;
        deliver(comm, s.source, std::move(in), tag, bytes);  // finds this stream: streams_ keeps its place
      }
      for (auto& rest : after) hold(s, std::move(rest));
      if (s.queue.empty() && s.owed == 0) streams_.erase(streams_.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    } else if (front.complete()) {
      Incoming done = pop_front(s);
      tag = done.tag;
      bytes = std::move(done.bytes);
      if (done.chunked) {
        auto took = std::chrono::duration_cast<std::chrono::milliseconds>(now - done.began);
        ferry::detail::debug_log("mpi: the frame of %s from rank %d %s after %lld ms",
                                 ferry::detail::format_size(done.size).c_str(), s.source,
                                 done.draining ? "is lost" : "is complete",
                                 static_cast<long long>(took.count()));
        if (done.draining) {
          tag = tag_frame_lost;
        } else {
          last_payload_ = std::move(done.payload);
        }
      }
      out = true;
    }
    if (out) {
      if (s.queue.empty() && s.owed == 0) streams_.erase(streams_.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    }
    if (progressed) {
      tag = tag_progress;
      return true;
    }
  }

  int flag = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Status st;
  // The source heard alone first (only_from): another's messages never take its place in a pass.
  if (only_from_ != MPI_ANY_SOURCE && MPI_Improbe(only_from_, MPI_ANY_TAG, comm, &flag, &message, &st) != MPI_SUCCESS)
    flag = 0;
  if (!flag && (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &message, &st) != MPI_SUCCESS || !flag))
    return false;
  source = st.MPI_SOURCE;
  bytes.clear();
  if (only_from_ != MPI_ANY_SOURCE && source != only_from_) {
    // Not read, nor taken for a frame or a chunk: dropped into scratch memory whatever its size.
    MPI_Count size = -1;
    MPI_Get_elements_x(&st, MPI_BYTE, &size);
    discard(message, size);
    tag = tag_unreadable;
    bytes = text("a message of tag " + std::to_string(st.MPI_TAG) + " from rank " + std::to_string(source) +
                 ", which this process does not hear");
    return true;
  }
  if (st.MPI_TAG != tag_heartbeat &&
      std::find(forgotten_.begin(), forgotten_.end(), std::make_pair(comm, source)) != forgotten_.end()) {
    // A source declared dead: nobody reads what it sends, and a buffer of each message's size
    // let a hostile rank the host had refused make it allocate gigabytes (2.1 GB of RSS in an
    // audit). Dropped into scratch memory whatever its size (its heartbeats, of no bytes, still
    // come out: they order nothing).
    MPI_Count size = -1;
    MPI_Get_elements_x(&st, MPI_BYTE, &size);
    discard(message, size);
    tag = tag_pending;
    return true;
  }
  auto stream = std::find_if(streams_.begin(), streams_.end(),
                             [&](const Stream& s) { return s.comm == comm && s.source == source; });
  int count = 0;
  if (MPI_Get_count(&st, MPI_BYTE, &count) != MPI_SUCCESS || count < 0) {
    // More bytes than an int counts (MPI_UNDEFINED): no ferry peer sends that (max_message_bytes),
    // and a buffer of a negative count cast to size_t would ask for 2^64 bytes. Dropped unread.
    MPI_Count size = -1;
    MPI_Get_elements_x(&st, MPI_BYTE, &size);
    discard(message, size);
    if (st.MPI_TAG == tag_frame_chunk && stream != streams_.end())
      for (auto& in : stream->queue)
        if (in.chunked && in.matched < in.size) {
          in.draining = true;  // its chunk is gone: the frame cannot be whole
          break;
        }
    tag = tag_unreadable;
    bytes = text("a message of tag " + std::to_string(st.MPI_TAG) +
                 " larger than MPI can count in an int (over 2 GiB - 1 bytes)");
    return true;
  }
  if (st.MPI_TAG == tag_frame_chunk) {
    tag = receive_chunk(stream == streams_.end() ? nullptr : &*stream, message, count);
    return true;
  }
  // What one source may hold here while its messages wait or are received (max_held): past it,
  // the message is dropped unread and the source refused.
  if (stream != streams_.end() && st.MPI_TAG != tag_heartbeat &&
      (stream->held + 1 > max_held || stream->held_bytes + static_cast<std::uint64_t>(count) > max_held_bytes)) {
    discard(message, count);
    tag = tag_unreadable;
    bytes = text("more than " + std::to_string(max_held) + " messages or " +
                 ferry::detail::format_size(max_held_bytes) + " of one source held behind a frame still arriving");
    return true;
  }
  Incoming in;
  in.tag = st.MPI_TAG;
  try {
    in.bytes = Buffer(static_cast<std::size_t>(count));
  } catch (const std::exception& e) {
    discard(message, count);
    tag = tag_unreadable;
    bytes = text("no memory for a message of " + ferry::detail::format_size(static_cast<std::uint64_t>(count)) +
                 " (tag " + std::to_string(st.MPI_TAG) + "): " + e.what());
    return true;
  }
  // Never a blocking receive: over TCP the bytes of a message past the eager limit move only
  // while its sender calls MPI, and a rank that sends one and stops froze the hub's thread (its
  // heartbeats, deadlines and every other rank with it) inside MPI_Mrecv.
  MPI_Request request = MPI_REQUEST_NULL;
  if (MPI_Imrecv(in.bytes.data(), count, MPI_BYTE, &message, &request) != MPI_SUCCESS) return false;
  int done = 0;
  if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
    tag = tag_unreadable;
    bytes = text("a message of tag " + std::to_string(in.tag) + " could not be received");
    return true;
  }
  if (done) {
    deliver(comm, source, std::move(in), tag, bytes);
    return true;
  }
  // Its bytes are still coming: it waits in its source's queue (and what the source sends next
  // behind it), tested by the loop above, given up on like a frame whose chunks stopped.
  in.late = true;
  in.requests.push_back(request);
  in.began = std::chrono::steady_clock::now();
  last_moved_ = in.began;
  Stream& s = stream_of(comm, source);
  if (!s.waiting()) s.last_chunk = in.began;
  hold(s, std::move(in));
  tag = tag_pending;
  return true;
}

}  // namespace ferry::mpi::detail
