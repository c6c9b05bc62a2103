# SPDX-License-Identifier: BSD-3-Clause
# Tasks for bench/loky_bench.py: module-level, so both pickle and cloudpickle send them by reference.
import os
import signal
import time


def square(x):
    return x * x


def func_async(i, args):
    """The seed plugin's func_async: 2 * i whatever the extra argument."""
    return 2 * i


def byte_count(data):
    return len(data)


def segfault(x):
    os.kill(os.getpid(), signal.SIGSEGV)
    return x


def worker_pid():
    return os.getpid()


def pid_after(ms):
    """Sleeps ms milliseconds, then returns the worker's pid (spreads calls over the workers)."""
    time.sleep(ms / 1000)
    return os.getpid()
