// SPDX-License-Identifier: BSD-3-Clause
// The node agent loop (ferry-mpi-worker, and ranks > 0 under ferry::mpi::serve).
#pragma once

#include <mpi.h>

#include <ferry/detail/export.hpp>

namespace ferry::mpi::detail {

/// Serves the host at `host_rank` of `comm` until it says quit (0) or stops answering (the exit
/// status to give). With `finalize`, then calls MPI_Finalize when that cannot hang: the host said
/// quit and had lost no rank of the job; otherwise the process ends there (_exit), and a finalize
/// that takes over 10 s ends it too.
FERRY_INTERNAL_API int run_agent(MPI_Comm comm, int host_rank, bool finalize);

/// Starts the host's hub (hub.cpp) now rather than with the first executor: serve() at rank 0 of
/// a job of N, so that the agents hear from their host from the start.
void start_hub();

/// The argument a hub gives the agents it spawns (MPI_Comm_spawn), so that a program it spawned
/// can tell that from being spawned by some other MPI program: only then does serve() make it an
/// agent, and its own hub refuse spawn mode (FERRY_MPI_WORKER naming a host program).
inline constexpr const char* spawned_agent_argument = "--ferry-mpi-agent";

/// Whether this process was started with spawned_agent_argument (read from /proc/self/cmdline).
bool spawned_by_a_ferry_host();

}  // namespace ferry::mpi::detail
