// SPDX-License-Identifier: BSD-3-Clause
// ferry-mpi-worker: a node agent, spawned by a host (MPI_Comm_spawn) or started by mpirun beside it.
#include <mpi.h>

#include <cstring>
#include <iostream>

#include <ferry/ferry.hpp>

#include "agent.hpp"
#include "wire.hpp"

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--version") == 0) {
      // As ferry-worker says its protocol: what a host of another build must speak to be served.
      std::cout << "ferry-mpi-worker " << ferry::version() << " (MPI protocol "
                << ferry::mpi::detail::mpi_protocol_version << ")\n";
      return 0;
    }
  ferry::mpi::detail::prepare_mpi_environment();
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  // Spawned: the host is rank 0 of the parent group. Started by mpirun: rank 0 of the world.
  return ferry::mpi::detail::run_agent(parent != MPI_COMM_NULL ? parent : MPI_COMM_WORLD, 0, true);
}
