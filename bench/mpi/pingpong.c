// SPDX-License-Identifier: BSD-3-Clause
// ferry-mpi-pingpong: raw MPI small-message ping-pong between ranks 0 and 1, the floor of a round trip.
//
//   mpirun -n 2 ferry-mpi-pingpong [--iterations N] [--bytes B] [--blocking-idle S]
//
// Rank 0 sends B bytes (default 8) to rank 1 with MPI_Send, which sends them back; one round trip
// is rank 0's MPI_Send + MPI_Recv, timed one by one with MPI_Wtime after 1,000 untimed ones.
// The transport is whatever the environment tells Open MPI: OMPI_MCA_btl=self,vader (shared
// memory) or self,tcp (TCP over loopback, with OMPI_MCA_btl_tcp_if_include=lo). Rank 0 prints one
// JSON object per metric, as ferry-bench: the round trip's median and p90 in microseconds
// (what ferry's round trip, a request and its reply, compares with) and half the median (one way).
// With --blocking-idle S (seconds), then rank 1 waits for one more message in a blocking MPI_Recv
// while rank 0 sleeps S seconds: the CPU rank 1 burns meanwhile (getrusage), in % of a core, is
// what waiting in MPI itself costs (Open MPI polls inside MPI_Recv; mpi_yield_when_idle=1 makes it
// yield between polls).
#include <mpi.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

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
  double idle_seconds = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
      iterations = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--bytes") == 0 && i + 1 < argc) {
      bytes = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--blocking-idle") == 0 && i + 1 < argc) {
      idle_seconds = strtod(argv[++i], NULL);
    } else {
      if (rank == 0)
        fprintf(stderr, "usage: mpirun -n 2 ferry-mpi-pingpong [--iterations N] [--bytes B] [--blocking-idle S]\n");
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
  if (idle_seconds > 0) {
    double cpu_percent = 0;
    if (rank == 0) {
      struct timespec nap = {(time_t)idle_seconds, (long)((idle_seconds - (double)(time_t)idle_seconds) * 1e9)};
      nanosleep(&nap, NULL);
      MPI_Send(buf, (int)bytes, MPI_CHAR, 1, 1, MPI_COMM_WORLD);
      MPI_Recv(&cpu_percent, 1, MPI_DOUBLE, 1, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      const char* yield = getenv("OMPI_MCA_mpi_yield_when_idle");
      printf("{\"metric\": \"blocking_wait_cpu_percent\", \"value\": %.6g, \"unit\": \"%% of a core\", \"note\": "
             "\"rank 1 in a blocking MPI_Recv for %.3g s (user+sys, getrusage); mpi_yield_when_idle %s\"}\n",
             cpu_percent, idle_seconds, yield ? yield : "(default: 0)");
      fflush(stdout);
    } else {
      struct rusage r0, r1;
      getrusage(RUSAGE_SELF, &r0);
      double t0 = MPI_Wtime();
      MPI_Recv(buf, (int)bytes, MPI_CHAR, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      double wall = MPI_Wtime() - t0;
      getrusage(RUSAGE_SELF, &r1);
      double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                   (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
      cpu_percent = wall > 0 ? cpu / wall * 100 : 0;
      MPI_Send(&cpu_percent, 1, MPI_DOUBLE, 0, 2, MPI_COMM_WORLD);
    }
  }
  free(buf);
  free(us);
  MPI_Finalize();
  return 0;
}
