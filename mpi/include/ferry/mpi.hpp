// SPDX-License-Identifier: BSD-3-Clause
// ferry on Open MPI: the same Executor, its workers on the ranks of an MPI job.
#pragma once

#include <ferry/detail/export.hpp>

namespace ferry::mpi {

/**
@brief Makes ExecutorOptions::backend = "mpi" available in this process. Thread-safe.

With a job of one process (a plain run, or `mpirun -n 1 host`) workers are started with
MPI_Comm_spawn, one node agent (`ferry-mpi-worker`) per worker, respawned as needed. In a job of
N processes (`mpirun -n 1 host : -n N-1 ferry-mpi-worker`, or `mpirun -n N host` whose other ranks
call serve()), rank 0 is the host and the N-1 other ranks are its workers.
@code
ferry::mpi::enable();
ferry::Executor ex({.max_workers = 4, .backend = "mpi"});
@endcode
*/
FERRY_API void enable();

/**
@brief For `mpirun -n N host`: every rank but 0 runs a node agent here and exits with its status
when the host is done; rank 0 returns and goes on as the host. Call first thing in main().
A process spawned by a ferry host (FERRY_MPI_WORKER naming this program) is an agent of it too.

In a job of N, rank 0 starts ferry's MPI hub here (when MPI runs with MPI_THREAD_MULTIPLE, as
when serve() initialised it), so that the agents hear from their host from the start: they take
a host silent for FERRY_MPI_TIMEOUT_MS for gone, and the host may work for longer than that
before it makes its first executor.
*/
FERRY_API void serve(int& argc, char**& argv);

/**
@brief Stops the backend: running remote workers end, the agents are told to leave, and MPI is
finalised if ferry initialised it. Runs at exit by itself; call it before your own MPI_Finalize()
if your program initialised MPI. Executors using "mpi" must be shut down first. Waits at most
10 seconds.
*/
FERRY_API void finalize();

}  // namespace ferry::mpi
