// SPDX-License-Identifier: BSD-3-Clause
// The hostile plugin: tasks that do what ferry::Sandbox and ferry::Limits must stop (issue 12),
// each a plain system call a task could make. A failed call throws std::system_error(errno,
// std::generic_category(), what), so the host sees strerror ("Permission denied", "Too many open
// files", ...) in TaskError::remote_message().
//
// Pids are GLOBAL pids, read with readlink("/proc/self"): getpid() would be the pid inside the
// worker's PID namespace, which the host (and kill() in a test) cannot use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ferry/task.hpp>

/// Connects a TCP socket to 127.0.0.1:`port` (needs the network: socket(AF_INET)); returns `port`.
FERRY_EXPORT int connect_loopback(int port);
/// Creates or truncates the file at `path` and writes `text` into it; returns true.
FERRY_EXPORT bool write_file(std::string path, std::string text);
/// The whole content of the file at `path`.
FERRY_EXPORT std::string read_file(std::string path);
/// inotify_add_watch on `path` (every event); its watch descriptor.
FERRY_EXPORT int watch_directory(std::string path);
/// Forks a child that runs /bin/sh -c "exit 7" (needs execve) and returns its exit code (7), or
/// 128 + the signal that ended it.
FERRY_EXPORT int exec_shell();
/// Forks `n` children that pause() and are never reaped (they end with the worker); returns how
/// many it forked. A failed fork throws (EAGAIN at a processes limit). A safety net: each child
/// also ends after 30 s by itself (SIGALRM), so a missing containment leaks them (and the worker's
/// channel they inherited) for 30 s instead of forever; the tests look for them within 2 s.
FERRY_EXPORT int fork_bomb(int n);
/// fork_bomb that copes: a refused fork ends the loop, and the task returns how many it forked.
FERRY_EXPORT int fork_until_refused(int n);
/// Starts `n` runners and returns `n`: each calls setsid(), then forks and exits in a loop, its
/// newest child going on (a new pid every ~100 us, a fork past a processes limit tried again 1 ms
/// later), never more than two processes at a time. A safety net: a runner ends by itself 30 s
/// after it started, so a missing containment leaks it for 30 s instead of forever.
FERRY_EXPORT int fork_runners(int n);
/// `new char[bytes]`; with `touch`, writes to every page (resident, not only reserved). The
/// memory is freed before returning `bytes`. std::bad_alloc escapes as it is.
FERRY_EXPORT std::uint64_t allocate(std::uint64_t bytes, bool touch);
/// Maps `bytes` of shared memory and writes to every page: `how` 0 an anonymous MAP_SHARED
/// mapping, 1 a memfd (closed once mapped), 2 a System V segment, 3 as 0 after forking a child
/// that pauses (killed and reaped before returning; the worker's pages are then copy-on-write).
/// None is counted by RLIMIT_DATA. Unmapped before returning `bytes`; a failed call throws.
FERRY_EXPORT std::uint64_t share_memory(std::uint64_t bytes, int how);
/// Writes up to `bytes` into a memfd with write() (memory a cgroup charges in the system call,
/// not in a page fault), keeps it open for good when `keep`, and returns how many were written
/// (it stops at the first failed write: the task coped).
FERRY_EXPORT std::uint64_t write_shared(std::uint64_t bytes, bool keep);
/// A string of `bytes` bytes ('r'): a result large enough to travel in shared memory.
FERRY_EXPORT std::string bytes_result(std::uint64_t bytes);
/// How many threads of this process are not under a seccomp filter (/proc/self/task/*/status),
/// and how many there are: "unfiltered/all".
FERRY_EXPORT std::string unfiltered_threads();
/// Opens /dev/null `n` times, never closing (nor O_CLOEXEC); throws on the first failure
/// (EMFILE), naming how many it had opened. Returns `n`.
FERRY_EXPORT int leak_files(int n);
/// Forks a child that calls setsid() and forks a grandchild that pause()s forever, outside the
/// worker's session and process group; the child exits at once and is reaped. Returns the
/// grandchild's global pid.
FERRY_EXPORT int setsid_grandchild();
/// setsid_grandchild whose grandchild first makes itself undumpable (prctl(PR_SET_DUMPABLE, 0),
/// its option with high bits set), which would keep its /proc entries (its user namespace among
/// them) from other processes of its user.
FERRY_EXPORT int hidden_grandchild();
/// PTRACE_ATTACH to `pid`, waits for it to stop, PTRACE_DETACH; returns 0.
FERRY_EXPORT int ptrace_pid(int pid);
/// Pushes a character into the input of the terminal on descriptor `fd` (ioctl TIOCSTI, its
/// command with high bits set when `high_bits`): what the user's shell would read and run.
/// Returns errno (0 when it went in).
FERRY_EXPORT int type_into_terminal(int fd, bool high_bits);
/// Reads from descriptor `fd` without waiting (a terminal the worker shares with the host):
/// returns errno (EBADF: not open for reading; EAGAIN: nothing typed yet), or 0 when it read.
FERRY_EXPORT int read_descriptor(int fd);
/// Burns `seconds` of this thread's CPU time; returns `seconds`.
FERRY_EXPORT int spin_cpu(int seconds);
/// Creates or truncates the file at `path` and writes `bytes` bytes into it (64 KiB at a time);
/// returns `bytes`.
FERRY_EXPORT std::uint64_t write_bytes(std::string path, std::uint64_t bytes);
/// This worker's global pid (readlink("/proc/self")).
FERRY_EXPORT int hostile_pid();
/// Starts a detached thread that spins for `seconds` of wall time and returns at once: this
/// worker's global pid.
FERRY_EXPORT int leave_spinning_thread(int seconds);
/// $TMPDIR in the worker, or "" when unset.
FERRY_EXPORT std::string temp_dir();
/// mkdir(path, 0700); returns 0, or errno.
FERRY_EXPORT int make_directory(std::string path);
/// rmdir(path); returns 0, or errno.
FERRY_EXPORT int remove_directory(std::string path);
/// Makes a symbolic link at `path` pointing to `target`; returns 0, or errno.
FERRY_EXPORT int make_symlink(std::string target, std::string path);
/// mknod of a FIFO ('f'), a socket ('s') or a character device ('c', /dev/null's numbers) at
/// `path`: 0, or the errno.
FERRY_EXPORT int make_node(std::string path, char kind);
/// Makes a file at `from` and renames it to `to` with RENAME_WHITEOUT (a device node 0:0 left at
/// `from`); 0, or the rename's errno (the file then removed).
FERRY_EXPORT int rename_whiteout(std::string from, std::string to);
/// Writes `text` into a file from tmpfile() and reads it back (glibc makes it in /tmp whatever
/// $TMPDIR says).
FERRY_EXPORT std::string tmpfile_round_trip(std::string text);
/// Creates the POSIX shared-memory object `name` (shm_open, in /dev/shm), writes `text` into its
/// mapping, reads it back and removes the object.
FERRY_EXPORT std::string posix_shm_round_trip(std::string name, std::string text);
/// The sum of the bytes (as unsigned char): large vectors travel through shared memory.
FERRY_EXPORT std::uint64_t sum_bytes(std::vector<char> data);
/// How many network interfaces SIOCGIFCONF lists on the worker's channel to the host (a socket of
/// the host's network namespace), or -errno.
FERRY_EXPORT int channel_interface_count();
/// flock(LOCK_EX | LOCK_NB) on `path` opened read-only: 0, or the errno.
FERRY_EXPORT int lock_file(std::string path);
/// A read lease (fcntl F_SETLEASE) on `path` opened read-only: 0, or the errno.
FERRY_EXPORT int lease_file(std::string path);
/// Truncates its stderr, then clears O_APPEND and writes "PWNED" at offset 0 of it, then writes
/// "from the task" there; says which of the first two worked ("truncated ", "overwritten ").
FERRY_EXPORT std::string attack_output();
/// What descriptor `fd` of the worker is (readlink of /proc/self/fd/N), or "(closed)".
FERRY_EXPORT std::string descriptor_target(int fd);
/// Writes lines of 64 bytes to descriptor `fd` until `bytes` are written or a write fails; how
/// many were written.
FERRY_EXPORT std::uint64_t flood_output(int fd, std::uint64_t bytes);
/// Writes `text` to descriptor `fd` in two writes, cut at byte `cut` (a character or an escape
/// sequence cut between two reads of a relay); the bytes written.
FERRY_EXPORT std::uint64_t write_text(int fd, std::string text, std::uint64_t cut);
/// The value of the environment variable `name` in the worker, or "(unset)".
FERRY_EXPORT std::string environment_variable(std::string name);
/// Bytes other than zero that task code finds in the shared-memory block of its arguments
/// (`zeros`, all zero: large enough to travel in one), past them and up to `span` bytes from the
/// block's start, mapping it again with mremap as far as the block goes.
FERRY_EXPORT std::uint64_t foreign_bytes_in_argument_block(std::vector<char> zeros, std::uint64_t span);
/// Keeps a mapping of its arguments' block (mremap) after the call; returns its length.
FERRY_EXPORT std::uint64_t keep_argument_block(std::vector<char> zeros);
/// Bytes other than zero in the block keep_argument_block kept (past its length field).
FERRY_EXPORT std::uint64_t kept_block_foreign_bytes();
/// Shuts down and closes the worker's channel (the descriptor after `--fd` in its command line),
/// then sleeps `seconds` and returns it: a worker whose channel closed while it runs on. Its
/// parent must not wait for its end (an MPI agent once did, for good).
FERRY_EXPORT int close_channel_and_wait(int seconds);
/// prlimit on process `pid`: reads its RLIMIT_CORE and, with `set`, sets it to what it is;
/// returns 0.
FERRY_EXPORT int limit_of(int pid, bool set);
/// Sets the chattr flags of the file at `path`, opened read-only, to what they are
/// (FS_IOC_GETFLAGS, FS_IOC_SETFLAGS): returns errno, 0 when it went through.
FERRY_EXPORT int set_file_flags(std::string path);
/// Sets the modes and the window size of the terminal on descriptor `fd` to what they are
/// (tcsetattr, TIOCSWINSZ): returns errno, 0 when it went through.
FERRY_EXPORT int set_terminal_modes(int fd);
/// posix_spawn of /bin/true and system("exit 3") (both need exec): returns 100 × the first's
/// exit code + 10 × the second's (30 when both ran).
FERRY_EXPORT int spawn_and_system();
/// Sets the nice value of process `pid` to what it is (PRIO_PROCESS); returns errno, 0 when it
/// went through.
FERRY_EXPORT int renice_process(int pid);
/// clone(2) with `flags` (CLONE_NEW*) and SIGCHLD, of a child that exits at once (reaped);
/// returns errno, 0 when it ran.
FERRY_EXPORT int clone_with_flags(int flags);
/// clone3(2) of a child that exits at once; returns errno, 0 when it ran.
FERRY_EXPORT int clone3_child();
/// socket(AF_UNIX, SOCK_STREAM), closed again, the family with high bits set when `high_bits`;
/// returns errno, 0 when made.
FERRY_EXPORT int unix_socket(bool high_bits);
/// socketpair(AF_UNIX, `type`), closed again; returns errno, 0 when made.
FERRY_EXPORT int unix_socket_pair(int type);
/// socket(`family` as 64 bits, `type`, `protocol`), closed again; returns errno, 0 when made.
FERRY_EXPORT int socket_of_family(long long family, int type, int protocol);
/// socketpair(`family` as 64 bits, `type`), closed again; returns errno, 0 when made.
FERRY_EXPORT int socket_pair_of_family(long long family, int type);
/// Changes the metadata of the file at `path` with call `how`: 0 chmod(`mode`), 1 fchmod(`mode`)
/// of it opened read-only, 2 fchmodat2(`mode`) (raw), 3 utimensat (now), 4 setxattr
/// ("user.ferry"), 5 setxattrat (raw), 6 chown (to this user); returns errno, 0 when it went
/// through.
FERRY_EXPORT int change_metadata(std::string path, int how, int mode);
/// Writes "max" into the pids.max of a pids cgroup through a descriptor the worker holds (as
/// root, with a processes limit), then fork_until_refused(`n`). Throws when there is none.
FERRY_EXPORT int raise_pids_max_and_fork(int n);
/// What a task tries to loosen its own processes limit: writes "max" into every pids.max it can
/// reach (a descriptor of the worker's whose link ends in /pids.max, through that descriptor and
/// reopened by its /proc/self/fd link; the pids.max beside any other cgroup file the worker holds
/// open; its cgroup's by path, from /proc/self/cgroup), tries to move itself into the cgroup
/// above and the root one, raises its soft RLIMIT_NPROC to the hard one, then
/// fork_until_refused(`n`). Returns how many it forked; never throws for a way that
/// failed.
FERRY_EXPORT int loosen_pids_max_and_fork(int n);
/// Raises its soft RLIMIT_DATA to the hard one (what a task may do to its own limits), then
/// allocate(`bytes`, true).
FERRY_EXPORT std::uint64_t raise_memory_limit_and_allocate(std::uint64_t bytes);
/// Creates the file at `path` with `mode` by call `how`: 0 open(O_CREAT|O_EXCL), 1 mknod, 2
/// openat2 (raw); returns errno, 0 when made.
FERRY_EXPORT int create_with_mode(std::string path, int mode, int how);
/// shmget(`key`, 0, 0): returns errno (ENOENT: no such System V segment here), 0 when found.
FERRY_EXPORT int find_shared_segment(int key);
/// ioctl(`command`) on /dev/null, which answers no terminal command: returns errno (ENOTTY
/// when the kernel got it), or 0.
FERRY_EXPORT int null_device_ioctl(int command);
/// The path this plugin was loaded from, as the worker's loader names it (dladdr): where an MPI
/// agent pointed the worker.
FERRY_EXPORT std::string library_path();
