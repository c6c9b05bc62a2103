// SPDX-License-Identifier: BSD-3-Clause
// The node agent loop (ferry-mpi-worker, and ranks > 0 under ferry::mpi::serve).
#pragma once

#include <mpi.h>

#include <ferry/detail/export.hpp>

namespace ferry::mpi::detail {

/// Serves the host at `host_rank` of `comm` until it says quit (0) or stops answering.
FERRY_INTERNAL_API int run_agent(MPI_Comm comm, int host_rank);

}  // namespace ferry::mpi::detail
