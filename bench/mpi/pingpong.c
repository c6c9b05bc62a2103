// SPDX-License-Identifier: BSD-3-Clause
// ferry-mpi-pingpong: raw MPI small-message ping-pong between ranks 0 and 1, the floor of a round trip.
//
//   mpirun -n 2 ferry-mpi-pingpong [--iterations N] [--bytes B]
//
// Rank 0 sends B bytes (default 8) to rank 1 with MPI_Send, which sends them back; one round trip
// is rank 0's MPI_Send + MPI_Recv, timed one by one with MPI_Wtime after 1,000 untimed ones.
// The transport is whatever the environment tells Open MPI: OMPI_MCA_btl=self,vader (shared
// memory) or self,tcp (TCP over loopback, with OMPI_MCA_btl_tcp_if_include=lo). Rank 0 prints one
// JSON object per metric, as ferry-bench: the round trip's median and p90 in microseconds
// (what ferry's round trip, a request and its reply, compares with) and half the median (one way).
#include <mpi.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_value(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  long iterations = 100000, bytes = 8;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
      iterations = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--bytes") == 0 && i + 1 < argc) {
      bytes = strtol(argv[++i], NULL, 10);
    } else {
      if (rank == 0) fprintf(stderr, "usage: mpirun -n 2 ferry-mpi-pingpong [--iterations N] [--bytes B]\n");
      MPI_Finalize();
      return 2;
    }
  }
  if (size != 2 || iterations < 1 || bytes < 1) {
    if (rank == 0)
      printf("{\"metric\": \"pingpong_roundtrip_us_median\", \"value\": null, \"unit\": \"\", \"note\": "
             "\"error: needs exactly 2 ranks (got %d), --iterations >= 1 and --bytes >= 1\"}\n", size);
    MPI_Finalize();
    return 1;
  }
  const long warm = 1000;
  char* buf = calloc((size_t)bytes, 1);
  double* us = malloc(sizeof(double) * (size_t)iterations);
  if (!buf || !us) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Barrier(MPI_COMM_WORLD);
  for (long i = 0; i < warm + iterations; ++i) {
    if (rank == 0) {
      double t0 = MPI_Wtime();
      MPI_Send(buf, (int)bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
      MPI_Recv(buf, (int)bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      double t1 = MPI_Wtime();
      if (i >= warm) us[i - warm] = (t1 - t0) * 1e6;
    } else {
      MPI_Recv(buf, (int)bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(buf, (int)bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
    }
  }
  if (rank == 0) {
    qsort(us, (size_t)iterations, sizeof(double), by_value);
    double med = iterations % 2 ? us[iterations / 2] : (us[iterations / 2 - 1] + us[iterations / 2]) / 2;
    long r90 = (long)ceil(0.9 * (double)iterations);
    double p90 = us[(r90 < 1 ? 1 : r90) - 1];
    const char* btl = getenv("OMPI_MCA_btl");
    char note[512];
    snprintf(note, sizeof note,
             "MPI_Send + MPI_Recv of %ld bytes, rank 0 -> 1 -> 0, %ld round trips after %ld untimed; "
             "btl %s; min %.3f, max %.3f",
             bytes, iterations, warm, btl ? btl : "(Open MPI's choice)", us[0], us[iterations - 1]);
    printf("{\"metric\": \"pingpong_roundtrip_us_median\", \"value\": %.6g, \"unit\": \"us\", \"note\": \"%s\"}\n", med, note);
    printf("{\"metric\": \"pingpong_roundtrip_us_p90\", \"value\": %.6g, \"unit\": \"us\", \"note\": \"%s\"}\n", p90, note);
    printf("{\"metric\": \"pingpong_oneway_us_median\", \"value\": %.6g, \"unit\": \"us\", \"note\": "
           "\"half the median round trip; %s\"}\n", med / 2, note);
    fflush(stdout);
  }
  free(buf);
  free(us);
  MPI_Finalize();
  return 0;
}
