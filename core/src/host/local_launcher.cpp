// SPDX-License-Identifier: BSD-3-Clause
#include "host/local_launcher.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string_view>
#include <system_error>

#include <ferry/errors.hpp>

#include "platform/config.hpp"
#include "platform/paths.hpp"
#include "platform/spawn.hpp"
#include "platform/trust.hpp"
#include "plugins/load_dependencies.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

/// Where ferry-worker is: the option, $FERRY_WORKER, the one installed with this libferry (found
/// relative to libferry's own file: the build tree mirrors the install tree, so no build-tree
/// path is compiled in), then $PATH. Whichever is chosen must pass the trust check before it
/// runs (LocalLauncher::launch).
fs::path find_worker(const fs::path& configured) {
  // A relative path is taken from the working directory now, once: a chdir later made every
  // worker start after it (a respawn) fail, or run another program of that name.
  auto from_here = [](const fs::path& p) {
    std::error_code ec;
    fs::path absolute = fs::absolute(p, ec);
    return ec ? p : absolute;
  };
  if (!configured.empty()) return from_here(configured);
  if (auto env = Config::read().worker; !env.empty()) return from_here(env);
  std::vector<fs::path> candidates;
  if (auto dir = library_directory(); !dir.empty()) candidates.push_back(dir / FERRY_WORKER_RELATIVE_PATH);
  if (auto on_path = find_program("ferry-worker")) candidates.push_back(*on_path);
  for (const auto& c : candidates) {
    std::error_code ec;
    if (is_executable_file(c)) return fs::weakly_canonical(c, ec);
  }
  return candidates.empty() ? fs::path("ferry-worker") : candidates.front();
}

namespace {

class LocalWorker final : public LaunchedWorker {
 public:
  LocalWorker(pid_t pid, Fd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  int pid() const override { return pid_; }
  int exit_fd() const override { return pidfd_.get(); }
  void kill() override { ::kill(pid_, SIGKILL); }
  WorkerExit status() override {
    ExitStatus st;
    if (!try_reap(pid_, st)) st = reap(pid_);  // the pidfd is readable: it has exited
    return st;
  }

 private:
  pid_t pid_;
  Fd pidfd_;
};

/// A sandboxed worker's environment: what a process needs to run (the search paths, the user's
/// name and home, language, time zone, terminal), what chooses its devices (GPUs, as a scheduler
/// set them) and tunes libraries' threads and allocators and the sanitizers, ferry's own
/// settings, and with the network its proxies and certificates; plus ExecutorOptions::env
/// (`given`), as given. Nothing else of the host's: its environment holds the user's secrets
/// (tokens, keys, passwords of CI jobs and cloud tools), every one readable by the task. Names
/// are listed whole where a prefix would let anything through (ssh passes LC_* along, so
/// `LC_MY_TOKEN` is a known way to carry one). GCONV_PATH never, not even given: glibc reads it at
/// iconv_open, in the worker's own mount namespace, where /tmp, /var/tmp and /dev/shm are the
/// sandbox's private directory that tasks write, so a directory judged on the host's real /tmp
/// is read from that one (LD_PRELOAD and LD_AUDIT are read by the loader at exec, before the
/// worker enters it).
std::vector<std::string> sandbox_environment(std::vector<std::string> env, const std::map<std::string, std::string>& given,
                                             bool network) {
  static constexpr std::string_view names[] = {
      "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
      // What the loader loads code from: judged after this (keep_trusted_loader_environment, in
      // the launcher), as without a sandbox; LD_ORIGIN_PATH, which it never keeps, and GCONV_PATH
      // (above) are not here.
      "LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT",
      "GLIBC_TUNABLES", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_TIME", "LC_COLLATE", "LC_MONETARY", "LC_MESSAGES",
      "LC_PAPER", "LC_NAME", "LC_ADDRESS", "LC_TELEPHONE", "LC_MEASUREMENT", "LC_IDENTIFICATION",
      "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
      "GPU_DEVICE_ORDINAL", "ZE_AFFINITY_MASK", "LLVM_PROFILE_FILE", "GCOV_PREFIX", "GCOV_PREFIX_STRIP",
      "FERRY_WORKER"};
  static constexpr std::string_view network_names[] = {
      "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
      "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"};
  static constexpr std::string_view prefixes[] = {"OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "BLIS_", "TBB_",
                                                  "MALLOC_", "ASAN_", "UBSAN_", "LSAN_", "TSAN_", "MSAN_", "HWASAN_"};
  auto kept = [&](std::string_view name) {
    if (name == "GCONV_PATH") return false;
    if (given.count(std::string(name)) || std::find(std::begin(names), std::end(names), name) != std::end(names))
      return true;
    if (network && std::find(std::begin(network_names), std::end(network_names), name) != std::end(network_names))
      return true;
    for (const auto& v : config_variables())
      if (name == v.name) return true;  // ferry's own settings, by name
    return std::any_of(std::begin(prefixes), std::end(prefixes), [&](std::string_view p) { return name.starts_with(p); });
  };
  std::erase_if(env, [&](const std::string& entry) { return !kept(std::string_view(entry).substr(0, entry.find('='))); });
  return env;
}

}  // namespace

LocalLauncher::LocalLauncher(const ExecutorOptions& options)
    : worker_path_(find_worker(options.worker_path)),
      allow_unsafe_(options.allow_unsafe_plugins || unsafe_allowed_by_environment()) {
  std::vector<std::pair<std::string, std::string>> env(options.env.begin(), options.env.end());
  // Workers decode large arguments into fresh allocations: let glibc back them with transparent
  // huge pages (one fault per 2 MiB, not per 4 KiB page), unless GLIBC_TUNABLES says otherwise.
  if (!options.env.count("GLIBC_TUNABLES")) {
    const char* t = std::getenv("GLIBC_TUNABLES");
    std::string tunables = t ? t : "";
    if (tunables.find("glibc.malloc.hugetlb") == std::string::npos)
      env.emplace_back("GLIBC_TUNABLES", (tunables.empty() ? "" : tunables + ":") + "glibc.malloc.hugetlb=1");
  }
  env_ = merged_environment(env);
  if (options.sandbox.enabled) env_ = sandbox_environment(std::move(env_), options.env, options.sandbox.network);
  // The worker's loader finds ferry's and the plugins' libraries through LD_LIBRARY_PATH, and
  // loads what LD_PRELOAD and LD_AUDIT name before main(); glibc loads iconv modules from
  // GCONV_PATH: an empty or relative element is the host's current directory when the worker
  // starts, and a file or directory another user can write loads their code into every worker
  // (unless the user allowed unsafe plugins).
  if (!allow_unsafe_)
    keep_trusted_loader_environment(env_, "workers' environment", untrusted_search_directory, dependency_verdict);
}

std::exception_ptr LocalLauncher::start_failure(const std::string& why) const {
  return std::make_exception_ptr(BrokenProcessPool::spawn_failed(worker_path_.string(), why));
}

std::optional<Launcher::Launched> LocalLauncher::launch(const std::vector<std::string>& worker_args,
                                                        std::string& why) {
  // The program ferry runs for the user must be one no other user could have planted (a missing
  // one is posix_spawn's ENOENT below, unless another user could create it meanwhile).
  if (!allow_unsafe_) {
    if (std::string reason = untrusted_reason_if_present(worker_path_); !reason.empty()) {
      why = "refusing to run it: " + reason +
            " (fix the permissions, or set allow_unsafe_plugins / FERRY_ALLOW_UNSAFE_PLUGINS=1)";
      return std::nullopt;
    }
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    why = std::string("socketpair: ") + std::strerror(errno);
    return std::nullopt;
  }
  Fd host(sv[0]), child(sv[1]);
  std::vector<std::string> args = {"--fd", "3", "--parent", std::to_string(::getpid())};
  args.insert(args.end(), worker_args.begin(), worker_args.end());
  SpawnedProcess p;
  try {
    p = spawn_process(worker_path_, args, env_, child.get());
  } catch (const std::system_error& e) {
    why = e.code().message();
    // The program itself (EAGAIN, ENOMEM: the machine's limits are the reason, not the path).
    if (const int code = e.code().value();
        code == ENOENT || code == EACCES || code == ENOEXEC || code == ENOTDIR || code == ELOOP || code == EISDIR)
      why += worker_path_advice;
    return std::nullopt;
  }
  if (!p.pidfd) {
    // Without pidfd (Linux < 5.3) deaths could not be told apart from a closed channel.
    ::kill(p.pid, SIGKILL);
    reap(p.pid);
    why = p.pidfd_error == ENOSYS ? "pidfd_open is not available (ferry needs Linux 5.3 or later)"
                                  : std::string("pidfd_open: ") + std::strerror(p.pidfd_error);
    return std::nullopt;
  }
  return Launched{host.release(), std::make_shared<LocalWorker>(p.pid, std::move(p.pidfd))};
}

}  // namespace ferry::detail
