// SPDX-License-Identifier: BSD-3-Clause
// ferry-worker: runs tasks sent by a ferry host over the socket it inherits as fd 3.
#include "worker/worker_main.hpp"

int main(int argc, char** argv) { return ferry::detail::worker_main(argc, argv); }
