// SPDX-License-Identifier: BSD-3-Clause
// Helpers shared by the MPI hub (host) and the node agents.
#include "wire.hpp"

#include "platform/config.hpp"
#include "platform/format.hpp"
#include "platform/hash.hpp"
#include "wire/failure.hpp"

#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <ferry/detail/type_name.hpp>

namespace ferry::mpi::detail {

namespace proto = ferry::detail::protocol;

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

void prepare_mpi_environment() {
  ::setenv("OMPI_MCA_btl_tcp_progress_thread", "1", 0);
  ::setenv("OMPI_MCA_orte_enable_recovery", "1", 0);
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

Buffer frame_bytes(const ferry::detail::Frame& f) {
  Buffer out(proto::header_size);
  proto::write_header(out.data(), f.header.type, f.body.size(),
                      static_cast<std::uint8_t>(f.header.flags & ~proto::flag_shm));
  out.append(f.body.data(), f.body.size());
  return out;
}

namespace {

/// The error result that stands for a task frame or result frame too large for MPI.
Buffer too_large_answer(const ferry::detail::Frame& f, std::uint64_t bytes) {
  proto::BodyReader r(f.view());
  bool task = f.header.type == proto::FrameType::task;
  std::uint64_t call = task ? proto::decode_task_head(r).call : proto::decode_result_head(r).call;
  // The stage whose bytes cannot travel: the host reports it as that SerializationError.
  auto stage = task ? ferry::detail::InvokeStatus::decode_arguments_failed
                    : ferry::detail::InvokeStatus::encode_result_failed;
  return ferry::detail::encode_failure(
      call, ferry::detail::Failure::in_stage(
                stage, 0, "MPI message limit",
                std::string(task ? "the arguments" : "the result") + " take " +
                    ferry::detail::format_size(bytes) +
                    " as one message, more than MPI can carry in one: " +
                    ferry::detail::format_size(max_message_bytes),
                ""));
}

}  // namespace

bool FrameForwarder::pump(int fd, std::vector<Buffer>& out, std::vector<Buffer>& back) {
  for (int round = 0; round < 64; ++round) {
    ssize_t n = reader_.fill(fd, MSG_DONTWAIT);
    ferry::detail::Frame f;
    while (reader_.next(f)) {
      bool shm = (f.header.flags & proto::flag_shm) && f.fd;
      // A payload in a memfd cannot cross nodes: it is inlined. The body's last 8 bytes are its
      // size; they are replaced by the bytes themselves.
      if (shm && f.body.size() < 8) throw proto::ProtocolError("shared-memory frame without a size");
      std::size_t fixed = shm ? f.body.size() - 8 : f.body.size();
      std::uint64_t payload = shm ? proto::BodyReader(f.view().substr(fixed)).u64() : 0;
      std::uint64_t bytes = proto::header_size + fixed + payload;
      if (bytes > max_message_bytes) {
        if (f.header.type == proto::FrameType::task) {
          back.push_back(too_large_answer(f, bytes));
        } else if (f.header.type == proto::FrameType::result) {
          out.push_back(too_large_answer(f, bytes));
        } else {
          throw proto::ProtocolError("a frame of " + ferry::detail::format_size(bytes) +
                                     " is larger than one MPI message can carry");
        }
      } else if (shm) {
        Buffer mapped = Buffer::map_shared(f.fd.release(), payload);
        Buffer b(proto::header_size);
        b.reserve(bytes);
        proto::write_header(b.data(), f.header.type, fixed + payload,
                            static_cast<std::uint8_t>(f.header.flags & ~proto::flag_shm));
        b.append(f.body.data(), fixed);
        b.append(mapped.data(), mapped.size());
        out.push_back(std::move(b));
      } else {
        out.push_back(frame_bytes(f));
      }
    }
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
  }
  return true;
}

void Sender::send(Buffer bytes, int dest, int tag, MPI_Comm comm) {
  auto s = std::make_unique<InFlight>();
  s->bytes = std::move(bytes);
  // Sizes above INT_MAX would need a derived datatype; ferry frames are limited well below it
  // when they go over MPI (FERRY_MAX_FRAME_BYTES, 1 GiB by default).
  int rc = MPI_Isend(s->bytes.data(), static_cast<int>(s->bytes.size()), MPI_BYTE, dest, tag, comm,
                     &s->request);
  // A failed send (the peer is gone) is dropped: the heartbeat deadline reports the peer.
  if (rc == MPI_SUCCESS) inflight_.push_back(std::move(s));
}

bool Sender::progress() {
  for (std::size_t i = 0; i < inflight_.size();) {
    int done = 0;
    int rc = MPI_Test(&inflight_[i]->request, &done, MPI_STATUS_IGNORE);
    if (done || rc != MPI_SUCCESS) {
      inflight_[i] = std::move(inflight_.back());
      inflight_.pop_back();
    } else {
      ++i;
    }
  }
  return inflight_.empty();
}

bool try_receive(MPI_Comm comm, int& source, int& tag, Buffer& bytes) {
  int flag = 0;
  MPI_Status st;
  if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &st) != MPI_SUCCESS || !flag) return false;
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  bytes.resize(static_cast<std::size_t>(count));
  if (MPI_Recv(bytes.data(), count, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, comm, MPI_STATUS_IGNORE) !=
      MPI_SUCCESS)
    return false;
  source = st.MPI_SOURCE;
  tag = st.MPI_TAG;
  return true;
}

}  // namespace ferry::mpi::detail
