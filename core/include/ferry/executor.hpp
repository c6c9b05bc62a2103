// SPDX-License-Identifier: BSD-3-Clause
// ferry::Executor, its options, and get_reusable_executor.
#pragma once

#include <cxxabi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <ferry/call.hpp>
#include <ferry/detail/args.hpp>  // wire_t, as_param
#include <ferry/detail/codec.hpp>
#include <ferry/detail/export.hpp>
#include <ferry/detail/layout.hpp>
#include <ferry/detail/state.hpp>
#include <ferry/detail/type_name.hpp>
#include <ferry/errors.hpp>
#include <ferry/future.hpp>
#include <ferry/map.hpp>
#include <ferry/serialization.hpp>
#include <ferry/stats.hpp>
#include <ferry/task.hpp>
#include <ferry/task_ref.hpp>

namespace ferry {

/** @brief Seconds, fractional allowed: accepts `std::chrono::milliseconds(200)`, `2s`, `0.5s`. */
using Duration = std::chrono::duration<double>;

/**
@brief What one worker process may use while a task runs (0 = no limit). Going past a limit ends
the task with ResourceLimitError naming it, and the worker is replaced; other tasks are untouched.
See README "Running untrusted code".
*/
struct Limits {
  /// Bytes of private memory (heap, anonymous mappings: RLIMIT_DATA); shared-memory arguments do
  /// not count. Enforced while the task runs: an allocation past it fails, and the task ends. In
  /// a sandbox where a memory cgroup can be made (root, cgroup v1), also a ceiling on all the
  /// worker's memory, shared mappings included.
  std::size_t memory = 0;
  /// CPU time of one task, measured by the host (user + system time of the worker process).
  std::chrono::seconds cpu_time{0};
  /// Descriptors the worker process may hold (RLIMIT_NOFILE).
  std::size_t open_files = 0;
  /// Processes a task may have at once (its descendants): a pids cgroup as root, RLIMIT_NPROC in
  /// the worker's own user namespace otherwise.
  std::size_t processes = 0;
  /// Largest file a task may write (RLIMIT_FSIZE).
  std::size_t file_size = 0;

  bool operator==(const Limits&) const = default;
};

/**
@brief A sandbox around every worker of an executor: seccomp-bpf, Landlock, namespaces,
no_new_privs. Off unless `enabled`. A denied system call ends the task with SandboxViolationError;
a file outside the allowed paths fails inside the task with EACCES. Its workers get a list of the
host's environment (plus ExecutorOptions::env), and their stdout and stderr are pipes a relay
copies to the host's.
*/
struct Sandbox {
  bool enabled = false;
  /// Allow sockets (loopback and outside). Off: socket() is denied (socketpair stays allowed) and
  /// the worker has a network namespace of its own.
  bool network = false;
  /// Allow execve/execveat.
  bool exec = false;
  /// Readable besides what the worker needs (system libraries, its plugins, the FERRY_WRAP cache's
  /// plugins).
  std::vector<std::filesystem::path> read;
  /// Writable; empty: a private temporary directory made for the executor ($TMPDIR in the worker).
  std::vector<std::filesystem::path> write;
  /// Run with what this kernel supports instead of refusing to start when a mechanism is missing.
  bool best_effort = false;

  bool operator==(const Sandbox&) const = default;
};

/**
@brief How an Executor runs its workers. An aggregate: use designated initialisers.
@code
ferry::Executor ex({.max_workers = 4, .idle_timeout = std::chrono::seconds(30)});
@endcode
*/
struct ExecutorOptions {
  /// Number of worker processes; 0 = ferry::cpu_count(); at most 4096.
  std::size_t max_workers = 0;
  /// A worker idle this long exits cleanly and is respawned on demand; 0 = never, and so is one
  /// too long for the clock (years, +infinity). Negative or NaN: std::invalid_argument.
  Duration idle_timeout{0};
  /// Bytes a worker's RSS may grow over its size after its first task before it is recycled
  /// (after finishing its current task); 0 = off.
  std::size_t max_memory_growth = 0;
  /// Tasks a worker runs before it is recycled; 0 = unlimited.
  std::size_t max_tasks_per_child = 0;
  /// Run once in every new worker, before any task: a task name (resolved like submit by name;
  /// `.initializer = "init_flag"`), or a task with its arguments (`ferry::Call(load_model,
  /// "resnet", 4)` or `ferry::Call("load_model", std::string("resnet"), 4)`). See <ferry/call.hpp>.
  Call initializer;
  /// How long a worker's initializer may run, counted from the worker's hello. Past it the worker
  /// is killed and counts as a start failure, as one whose initializer crashed: its calls go to
  /// another worker, and after 3 in a row with no worker up they fail with BrokenProcessPool
  /// ("did not finish its initializer within ..."). 0 = no limit (calls behind a hung initializer
  /// then wait for it: their deadlines start when it ends), and so is one too long for the clock.
  /// Negative or NaN: std::invalid_argument.
  Duration initializer_timeout{0};
  /// Extra environment variables for the workers (override the host's; in a sandbox the workers
  /// get only a list of the host's variables, README "Running untrusted code", plus these).
  std::map<std::string, std::string> env;
  /// Directories searched by submit-by-name, before those in FERRY_PLUGIN_PATH.
  std::vector<std::filesystem::path> plugin_dirs;
  /// The worker executable; default: $FERRY_WORKER, else the ferry-worker installed or built with
  /// this libferry.
  std::filesystem::path worker_path;
  /// How many times a task whose worker died is resubmitted before it fails.
  unsigned max_retries_on_worker_death = 0;
  /// Turn the trust check off (also FERRY_ALLOW_UNSAFE_PLUGINS=1): accept plugins and a worker
  /// program that another user could have planted or changed (owned by another user, or writable
  /// by group/others, themselves or a directory on their way). See README "Trust".
  bool allow_unsafe_plugins = false;
  /// Where workers run: "local" (processes of this machine) or "mpi" (ranks of an Open MPI job;
  /// link ferry::mpi and call ferry::mpi::enable(), see <ferry/mpi.hpp>).
  std::string backend = "local";
  /// Resource limits of every worker while it runs a task (SubmitOptions::limits overrides them
  /// per task).
  Limits limits;
  /// The sandbox of every worker.
  Sandbox sandbox;
  /// Write a trace of the pool to this file, for Perfetto (ui.perfetto.dev, "Open trace file") or
  /// chrome://tracing: Chrome Trace Event JSON, one track per worker, a slice per call (a submit
  /// or a map chunk: task, call id, bytes, error), queue waits, worker starts, exits and crashes
  /// with their reasons, pool counters, and the stats at shutdown (docs/trace-format.md). Written
  /// as it goes, in whole lines, so that a host that crashed leaves a file that loads. Empty:
  /// $FERRY_TRACE, else no trace. The file is created mode 0600 (an existing file of this user is
  /// truncated); a symbolic link at the path, a file of another user, or anything but a regular
  /// file is refused (std::invalid_argument from the constructor). Another executor of this
  /// process writing the same path makes this one write `NAME.2.EXT` (then .3, ...).
  std::filesystem::path trace;
  /// The trace file's size cap (at least 16 KiB): once reached, a last "trace truncated" event
  /// is written and nothing more (but the closing stats line at shutdown).
  std::uint64_t trace_max_bytes = std::uint64_t{256} << 20;

  bool operator==(const ExecutorOptions&) const = default;
};

/** @brief Options of Executor::shutdown. */
struct ShutdownOptions {
  /// Block until every submitted task has ended and the workers have exited.
  bool wait = true;
  /// Fail every pending future with CancelledError now and SIGKILL the workers.
  bool kill_workers = false;
  /// Cancel every call that has not started (Python's `shutdown(cancel_futures=True)`): their
  /// futures end with CancelledError and say cancelled(); running calls, and those a worker
  /// holds behind its running call, still finish.
  bool cancel_futures = false;
};

/** @brief Per-submission options (Executor::submit_with). */
struct SubmitOptions {
  /// Wall-clock budget of the task once it is sent to a worker; when it expires, the worker is
  /// killed and the future fails with TimeoutError. 0 (or less) = none, and so is one too long
  /// for the clock (centuries, +infinity). NaN: submit throws std::invalid_argument.
  Duration deadline{0};
  /// Limits of this task: each non-zero field replaces the executor's (ExecutorOptions::limits).
  Limits limits;
};

namespace detail {
class Pool;
struct Succession;
struct ExecutorLink;

/// What a submission names, before it is resolved to a plugin path and task name.
struct Target {
  enum class Kind { function, name, ref } kind = Kind::name;
  const void* function = nullptr;
  std::string name;
  std::filesystem::path library;
  std::string_view signature;
  std::uint64_t fingerprint = 0;
  LayoutFn layout = nullptr;  ///< the signature's layout (detail/layout.hpp); none for JSON

  // Made by these, not by designated initialisers, which name some members only: GCC before 14
  // warns of the others with -Wextra (-Wmissing-field-initializers) in every program that submits.
  /// A task by name ("task" or "plugin:task").
  static Target by_name(std::string task) {
    Target t;
    t.name = std::move(task);
    return t;
  }
  /// A task of the plugin at `library` (TaskRef).
  static Target by_ref(std::string task, std::filesystem::path library) {
    Target t;
    t.kind = Kind::ref;
    t.name = std::move(task);
    t.library = std::move(library);
    return t;
  }
};

template <class Tuple>
struct TupleSize : std::integral_constant<std::size_t, 0> {};
template <class... Ts>
struct TupleSize<std::tuple<Ts...>> : std::integral_constant<std::size_t, sizeof...(Ts)> {};
template <class A, class B>
struct TupleSize<std::pair<A, B>> : std::integral_constant<std::size_t, 2> {};
}  // namespace detail

/**
@brief A pool of ferry-worker processes that run plugin tasks.

Submission never blocks on a worker: the task is written to an idle worker's channel by the
submitting thread, or queued for the next free one. Every future ends with a value or an error,
including at shutdown. Thread-safety: all members may be called from any thread concurrently.
*/
class FERRY_API Executor {
 public:
  /// @throws std::invalid_argument on bad options.
  explicit Executor(ExecutorOptions options = {});
  /// Shuts down and waits for submitted work: `shutdown({.wait = true})`.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /**
  @brief Runs `fn(args...)` in a worker. `fn` is a FERRY_TASK function of a shared library this
  process has loaded, or a FERRY_WRAP function. A plain function of the main program yields a
  future failing with UnresolvableTaskError.
  @throws BrokenProcessPool after shutdown. Other failures are stored in the future.
  */
  template <class R, class... P, class... A>
  Future<std::remove_cvref_t<R>> submit(R (*fn)(P...), A&&... args) {
    return submit_with(SubmitOptions{}, fn, std::forward<A>(args)...);
  }

  /**
  @brief Runs the task registered under `task` ("name" or "plugin:name") in a plugin directory.
  The result type R is given explicitly; argument types must match the task's parameters
  (after decay; C strings travel as std::string), which the worker checks by fingerprint.
  @code
  ferry::Future<int> f = ex.submit<int>("square", 7);
  @endcode
  */
  template <class R, class... A>
  Future<R> submit(std::string_view task, A&&... args) {
    return submit_with<R>(SubmitOptions{}, task, std::forward<A>(args)...);
  }
  template <class R, class... A>
  Future<R> submit(const char* task, A&&... args) {
    return submit_with<R>(SubmitOptions{}, std::string_view(task), std::forward<A>(args)...);
  }

  /** @brief Runs task `ref.name` of the plugin at `ref.library`. */
  template <class R, class... A>
  Future<R> submit(const TaskRef& ref, A&&... args) {
    return submit_with<R>(SubmitOptions{}, ref, std::forward<A>(args)...);
  }

  /** @brief submit(fn, args...) with per-task options (deadline). */
  template <class R, class... P, class... A>
  Future<std::remove_cvref_t<R>> submit_with(const SubmitOptions& options, R (*fn)(P...), A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A),
                  "ferry: submit(fn, args...) takes exactly one argument per parameter of fn");
    static_assert((std::is_convertible_v<A&&, std::remove_cvref_t<P>> && ...),
                  "ferry: an argument of submit cannot be converted implicitly to the matching "
                  "parameter type of the task, as a call of fn would refuse it: convert it yourself");
    return submit_values<std::remove_cvref_t<R>, std::remove_cvref_t<P>...>(options, function_target(fn),
                                                                           std::forward<A>(args)...);
  }
  template <class R, class... A>
  Future<R> submit_with(const SubmitOptions& options, std::string_view task, A&&... args) {
    return submit_named<R, A...>(options, detail::Target::by_name(std::string(task)), std::forward<A>(args)...);
  }
  template <class R, class... A>
  Future<R> submit_with(const SubmitOptions& options, const TaskRef& ref, A&&... args) {
    return submit_named<R, A...>(
        options,
        detail::Target::by_ref(ref.name, ref.library),
        std::forward<A>(args)...);
  }

  /**
  @brief Runs `fn` on every element of `inputs` and returns the results in input order (joblib's
  `Parallel`, concurrent.futures' `Executor.map`, Ray's `ray.get([f.remote(x) ...])`).

  For a one-parameter `fn`, each element is its argument; otherwise each element is a tuple or
  pair of the leading arguments. `extra...` are constant trailing arguments, the same for every
  element: `fn(element..., extra...)`, encoded once per chunk, not once per element. Inputs
  travel in chunks of `options.chunksize` (one message and one worker call each). Blocks until
  all chunks end, or until the first failure in input order is known with every input before it
  done: that one is rethrown (it names its input: Error::input_index()) at once, as
  concurrent.futures' Executor.map raises it; the chunks not yet started are cancelled, running
  ones end in the background and their results are dropped (they are stopped with
  MapOptions::kill_running). An input that
  cannot be encoded fails the map in input order too (SerializationError); an exception the
  input range itself throws (a transform's function, a filter's predicate) propagates unchanged,
  in input order as well. MapOptions adds a timeout, progress, a stop token and a bound on the
  chunks in flight. `inputs` may be any input range, lvalue or rvalue,
  also a view that cannot be iterated as const (views::filter, drop_while, an istream view): it
  is iterated once, in the calling thread, before map returns.
  @code
  auto packed = ex.map(compress, files, {.chunksize = 16}, 6);  // compress(file, 6) for each file
  @endcode
  */
  template <class R, class... P, std::ranges::input_range Range, class... X>
  auto map(R (*fn)(P...), Range&& inputs, MapOptions options = {}, X&&... extra) {
    using V = std::remove_cvref_t<R>;
    if constexpr (std::is_void_v<R>) {
      map_run<V, P...>(Mode::collect, function_target<R, P...>(fn), inputs, std::move(options),
                       std::forward<X>(extra)...);
    } else {
      return map_run<V, P...>(Mode::collect, function_target<R, P...>(fn), inputs, std::move(options),
                              std::forward<X>(extra)...)
          .first;
    }
  }
  /** @brief map over a task found by name in the plugin directories. */
  template <class R, std::ranges::input_range Range, class... X>
  auto map(std::string_view task, Range&& inputs, MapOptions options = {}, X&&... extra) {
    return by_name<R, Range, X...>(task, [&]<class... W>(detail::Target t) {
      if constexpr (std::is_void_v<R>) {
        map_run<R, W...>(Mode::collect, std::move(t), inputs, std::move(options), std::forward<X>(extra)...);
      } else {
        return map_run<R, W...>(Mode::collect, std::move(t), inputs, std::move(options),
                                std::forward<X>(extra)...)
            .first;
      }
    });
  }

  /**
  @brief A lazy map: a range of `fn`'s results in input order (loky's and multiprocessing's
  `imap`, joblib's `return_as="generator"`). Inputs are pulled as the iteration goes (an unbounded
  `std::views::iota` works), at most MapOptions::max_in_flight chunks ahead (default: about two
  per worker), so memory stays bounded. Without a chunksize, the first chunk each worker gets
  holds one input and later ones grow toward map's size: the first result comes after about one
  input's time (Python's imap sends chunks of one). An lvalue `inputs` must outlive the
  iteration; an rvalue is kept by the range. An input's error is thrown by the increment that reaches its chunk; one
  the input range itself throws, unchanged, after the results of the inputs read before it.
  MapOptions::timeout counts from this call, not from the first increment. The range may outlive
  the executor: what was sent before it went still comes back, then the increment that would
  send more throws BrokenProcessPool (an executor get_reusable_executor replaced hands the
  stream's chunks to its replacement).
  @code
  for (int r : ex.imap(square, std::views::iota(0))) if (r > 1000) break;
  @endcode
  */
  template <class R, class... P, std::ranges::input_range Range, class... X>
  auto imap(R (*fn)(P...), Range&& inputs, MapOptions options = {}, X&&... extra) {
    return stream<std::remove_cvref_t<R>, false, P...>(function_target<R, P...>(fn), std::forward<Range>(inputs),
                                  std::move(options), std::forward<X>(extra)...);
  }
  template <class R, std::ranges::input_range Range, class... X>
  auto imap(std::string_view task, Range&& inputs, MapOptions options = {}, X&&... extra) {
    return by_name<R, Range, X...>(task, [&]<class... W>(detail::Target t) {
      return stream<R, false, W...>(std::move(t), std::forward<Range>(inputs), std::move(options),
                                    std::forward<X>(extra)...);
    });
  }

  /**
  @brief As imap, in completion order: a range of ferry::Indexed<R> (`.index` of the input,
  `.value`) (multiprocessing's `imap_unordered`, joblib's `return_as="generator_unordered"`,
  concurrent.futures' `as_completed` over a map, Ray's `ray.wait`).
  */
  template <class R, class... P, std::ranges::input_range Range, class... X>
  auto imap_unordered(R (*fn)(P...), Range&& inputs, MapOptions options = {}, X&&... extra) {
    return stream<std::remove_cvref_t<R>, true, P...>(function_target<R, P...>(fn), std::forward<Range>(inputs),
                                 std::move(options), std::forward<X>(extra)...);
  }
  template <class R, std::ranges::input_range Range, class... X>
  auto imap_unordered(std::string_view task, Range&& inputs, MapOptions options = {}, X&&... extra) {
    return by_name<R, Range, X...>(task, [&]<class... W>(detail::Target t) {
      return stream<R, true, W...>(std::move(t), std::forward<Range>(inputs), std::move(options),
                                   std::forward<X>(extra)...);
    });
  }

  /**
  @brief A map that keeps going: one ferry::Outcome<R> per input, in input order, each its value
  or its own error (`ferry map --keep-going`; joblib has no equivalent, Ray users write
  `ray.get` in a try per object). A failing input fails only itself: the rest of its chunk runs
  again; a worker that dies fails only the input it was running (its chunk's inputs run again one
  by one). An input that cannot be encoded gets its SerializationError. After a stop, inputs that
  did not run get CancelledError (of a range without a size, only those already pulled).
  `inputs` as for map: any input range, also one that cannot be iterated as const. An exception
  the input range itself throws ends the call, unchanged (as Python's map raises it: an input that
  cannot be read has no outcome), once what was sent before it is back.
  */
  template <class R, class... P, std::ranges::input_range Range, class... X>
  std::vector<Outcome<std::remove_cvref_t<R>>> map_outcomes(R (*fn)(P...), Range&& inputs,
                                                            MapOptions options = {}, X&&... extra) {
    static_assert(!std::is_void_v<R>, "ferry: map_outcomes needs a task that returns a value");
    return map_run<std::remove_cvref_t<R>, P...>(Mode::outcomes, function_target<R, P...>(fn), inputs, std::move(options),
                            std::forward<X>(extra)...)
        .second;
  }
  template <class R, std::ranges::input_range Range, class... X>
  std::vector<Outcome<R>> map_outcomes(std::string_view task, Range&& inputs, MapOptions options = {},
                                       X&&... extra) {
    static_assert(!std::is_void_v<R>, "ferry: map_outcomes needs a task that returns a value");
    return by_name<R, Range, X...>(task, [&]<class... W>(detail::Target t) {
      return map_run<R, W...>(Mode::outcomes, std::move(t), inputs, std::move(options),
                              std::forward<X>(extra)...)
          .second;
    });
  }

  /**
  @brief Runs a task on JSON arguments, through cereal's JSON archive (what the `ferry` command
  uses). `lines` holds `items` lines, each a JSON object {"value0": arg0, "value1": arg1, ...}; the
  result holds one line per item, {"value0": result} ({} for void). With `keep_going`, a failing
  item's line is {"error": {"type", "message", "stage"}} and the other items still run; without,
  the first failure fails the future as usual. Argument types are checked by the decoding.
  @throws std::invalid_argument when `lines` does not hold `items` lines (one final newline
  allowed); BrokenProcessPool after shutdown.
  @code
  ex.submit_json("add", R"({"value0": 40, "value1": 2})").get();  // {"value0":42}
  @endcode
  */
  Future<std::string> submit_json(std::string_view task, std::string lines, std::uint32_t items = 1,
                                  bool keep_going = false);
  Future<std::string> submit_json(const TaskRef& ref, std::string lines, std::uint32_t items = 1,
                                  bool keep_going = false);

  /**
  @brief Stops accepting work. With `wait`, blocks until every submitted task ended and the
  workers exited; without, returns at once and the work still completes in the background. With
  `kill_workers`, every pending future fails with CancelledError and the workers are killed.
  Idempotent. On an executor get_reusable_executor replaced, it concerns that executor's own
  (already shut down) workers and work, never the replacement.
  */
  void shutdown(ShutdownOptions options = {});

  /// Changes the number of workers; running and queued work is neither lost nor duplicated.
  /// @throws std::invalid_argument for 0, BrokenProcessPool after shutdown.
  void resize(std::size_t max_workers);

  /// Starts every worker now and waits (up to `timeout`; one too long for the clock is no limit,
  /// NaN throws std::invalid_argument) until all have said hello and run the initializer.
  /// @returns true when all workers are up (with the "mpi" backend: as many as the job has
  /// ranks for, when that is fewer than max_workers); false at the timeout, or as soon as the
  /// initializer failed (the executor is broken).
  bool warm_up(Duration timeout = std::chrono::seconds(10));

  /// These describe this executor's own pool, also once get_reusable_executor replaced it.
  std::size_t max_workers() const;
  const ExecutorOptions& options() const;
  /// Pids of the workers that are up (started and handshaken, not exited), for diagnostics.
  std::vector<int> worker_pids() const;
  /// True after shutdown(), and for an executor get_reusable_executor replaced (which still
  /// accepts work: it goes to the replacement).
  bool is_shutdown() const;
  /// True once the pool cannot run tasks (its initializer failed); submit then throws.
  bool is_broken() const;
  /// What this executor's pool has done since it started, and holds now: calls submitted,
  /// queued, running, completed, failed (by error type), workers started, alive, crashed,
  /// recycled (by reason), bytes both ways, uptime (see ExecutorStats for the exact meanings).
  /// Cheap (a short lock, nothing walked): fine to call in a loop, from any thread.
  ExecutorStats stats() const;

 private:
  friend std::shared_ptr<Executor> get_reusable_executor(const ExecutorOptions& options);

  template <class R, class... A>
  Future<R> submit_named(const SubmitOptions& options, detail::Target target, A&&... args) {
    using Sig = detail::Signature<R, detail::wire_t<A>...>;
    target.signature = Sig::text.view();
    target.fingerprint = Sig::fingerprint;
    target.layout = &detail::signature_layout<R, detail::wire_t<A>...>;
    return submit_values<R, detail::wire_t<A>...>(options, std::move(target),
                                                  std::forward<A>(args)...);
  }

  template <class R, class... W, class... A>
  Future<R> submit_values(const SubmitOptions& options, detail::Target target, A&&... args) {
    (detail::require_serializable<W>(), ...);
    detail::require_serializable<R>();
    detail::require_owning_result<R>();
    auto state = detail::make_state<R>();
    detail::Buffer buffer;
    try {
      detail::encode_values(buffer, detail::as_param<W>(std::forward<A>(args))...);
    } catch (...) {
      // Whatever encoding throws, `throw 0` included (loky: sys.exit() in a reducer), is this
      // future's error and never escapes submit(), as the worker side treats its own stages.
      fail_encoding(*state, target, detail::current_exception_reason());
      return Future<R>(std::move(state));
    }
    submit_encoded(target, std::move(buffer), 0, state, options);
    return Future<R>(std::move(state));
  }

  enum class Mode { collect, outcomes };

  template <class R, class... P>
  static detail::Target function_target(R (*fn)(P...)) {
    detail::require_task_types<R (*)(P...)>();
    using Sig = detail::Signature<R, P...>;
    detail::Target t;
    t.kind = detail::Target::Kind::function;
    t.function = reinterpret_cast<const void*>(fn);
    t.signature = Sig::text.view();
    t.fingerprint = Sig::fingerprint;
    t.layout = detail::LayoutOf<R (*)(P...)>::fn;
    return t;
  }

  /// A by-name map: the parameter types are the elements' (a tuple's members) and the extras'.
  template <class R, class Range, class... X, class F>
  static auto by_name(std::string_view task, F&& f) {
    using E = std::ranges::range_value_t<Range>;
    detail::Target target = detail::Target::by_name(std::string(task));
    auto with = [&]<class... W>(std::type_identity<std::tuple<W...>>) {
      using Sig = detail::Signature<R, W...>;
      target.signature = Sig::text.view();
      target.fingerprint = Sig::fingerprint;
      target.layout = &detail::signature_layout<R, W...>;
      return f.template operator()<W...>(std::move(target));
    };
    if constexpr (detail::TupleSize<E>::value > 0) {
      return [&]<class... A>(std::type_identity<std::tuple<A...>>) {
        return with(std::type_identity<std::tuple<detail::wire_t<A>..., detail::wire_t<X>...>>{});
      }(std::type_identity<decltype(std::tuple_cat(std::declval<E>()))>{});
    } else {
      return with(std::type_identity<std::tuple<detail::wire_t<E>, detail::wire_t<X>...>>{});
    }
  }

  /// Where a map's inputs come from, and how each chunk of them is encoded.
  template <class View, class... W>
  struct MapSource {
    View view;
    std::ranges::iterator_t<View> it;
    std::ranges::sentinel_t<View> end;
    std::size_t next = 0;            // index of the next input
    std::size_t chunk = 1;           // inputs per chunk (see chunk_size())
    std::size_t ramp = 0;            // imap's default chunks: see chunk_size()
    std::size_t made = 0;            // chunks made so far
    bool keep = false;               // keep going: record item ends, and encoding errors
    std::string_view signature;
    std::string name;
    detail::Buffer prefix;           // the shared trailing arguments, encoded once
    std::vector<std::pair<std::size_t, std::exception_ptr>> unencodable;  // keep going
    std::exception_ptr input_error;  // the range's own, thrown by the produce() after its chunk

    static constexpr std::size_t params = sizeof...(W);

    /// Inputs in the next chunk: `chunk`, or with a ramp (imap and imap_unordered without a
    /// chunksize; `ramp` is the pool's size) one for each worker's first chunk, four for each
    /// one's second, 16, and so on up to `chunk`, map's size. The first results come after one
    /// input's time, as with Python's imap (chunks of one), where a chunk of map's size held them
    /// back for input count / (4 × workers) inputs; a long run of short inputs still travels in
    /// chunks of map's size after a few rounds (about workers × log4(chunk) chunks more than map
    /// sends: 7 more than its 8 for 1,000 inputs on 2 workers). Each round of small chunks costs
    /// round trips: growing by four rather than two halves them (imap of 10,000 short inputs ran
    /// at 0.57 of its former speed with doubling, 0.77 with this: docs/benchmarks.md).
    std::size_t chunk_size() const {
      if (ramp == 0) return chunk;
      const std::size_t round = made / ramp;
      return round >= 16 ? chunk : std::min(chunk, std::size_t{1} << (2 * round));
    }

    MapSource(View v) : view(std::move(v)), it(std::ranges::begin(view)), end(std::ranges::end(view)) {}

    template <class E, std::size_t... I>
    static void encode(detail::Encoder& enc, const E& element, std::index_sequence<I...>) {
      using T = std::tuple<W...>;
      if constexpr (sizeof...(I) == 1 && detail::TupleSize<E>::value == 0) {
        using P = std::remove_cvref_t<std::tuple_element_t<0, T>>;
        if constexpr (detail::raw_arithmetic<P>) {
          enc.arithmetic(P(detail::as_param<P>(element)));
        } else {
          enc(detail::as_param<std::tuple_element_t<0, T>>(element));
        }
      } else {
        static_assert(detail::TupleSize<E>::value == sizeof...(I),
                      "ferry: map over a task of several parameters takes a range of tuples (or "
                      "pairs) with one element per parameter (besides the constant extra arguments)");
        enc(detail::as_param<std::tuple_element_t<I, T>>(std::get<I>(element))...);
      }
    }

    /// Encodes the next chunk; false when no input is left.
    ///
    /// Two kinds of error, told apart by where they are thrown. The input range's own (comparing,
    /// dereferencing or incrementing its iterator: a transform's function, a filter's predicate,
    /// a stream that fails) is the user's code failing, not ferry's: it propagates as it was
    /// thrown, as Python's map raises what its iterable raised, from map, imap and map_outcomes
    /// alike (an input that cannot be produced has no index to give an Outcome to, and the range
    /// cannot be trusted past it). The inputs read before it in this chunk are sent first (their
    /// results come back before the error, in input order), and the next call throws it. It was
    /// inside the encoder's try when thrown by a dereference, and became a SerializationError
    /// "encoding the arguments in the host". What the encoder throws is a SerializationError
    /// naming the input: thrown at once by map and imap, kept for its Outcome by map_outcomes.
    template <std::size_t Own, class Chunk>
    bool produce(Chunk& c) {
      if (input_error) std::rethrow_exception(std::exchange(input_error, nullptr));
      const std::size_t size = chunk_size();
      for (;;) {
        detail::Encoder enc;
        enc.raw(prefix);
        if constexpr (Own == 1) {
          // A chunk of numbers: room for them at once (encode() appends each number's bytes),
          // within reason for a chunk size far above the input's.
          using P = std::remove_cvref_t<std::tuple_element_t<0, std::tuple<W...>>>;
          if constexpr (detail::raw_arithmetic<P>) enc.reserve(std::min<std::size_t>(size, 4096) * sizeof(P));
        }
        c.prefix = static_cast<std::uint32_t>(prefix.size());
        c.first = next;
        c.count = 0;
        bool at_end = false;
        std::exception_ptr unencodable_input;  // without keep going: thrown once out of the loop
        try {
          while (c.count < size) {
            if (!(it != end)) {
              at_end = true;
              break;
            }
            {
              decltype(auto) element = *it;
              const std::size_t at = enc.size();
              try {
                encode(enc, element, std::make_index_sequence<Own>{});
              } catch (...) {
                // Anything thrown, not only a std::exception, as in submit_values.
                SerializationError e(SerializationStage::encode_arguments, std::string(signature),
                                     detail::current_exception_reason(), name);
                e.set_input_index(next);
                if (!keep) {
                  unencodable_input = std::make_exception_ptr(std::move(e));
                  break;
                }
                // Its outcome is this error; the chunk's inputs stay consecutive (a chunk's values
                // are its inputs first, first + 1...): it ends before this one, or, empty yet,
                // starts after it. Left out of the middle of a chunk, it gave the inputs after it
                // the indices before theirs.
                enc.truncate(at);
                unencodable.emplace_back(next++, std::make_exception_ptr(std::move(e)));
                ++it;
                if (c.count > 0) break;
                c.first = next;
                continue;
              }
            }
            ++next;
            ++c.count;
            if (keep) c.ends.push_back(static_cast<std::uint32_t>(enc.size()));
            ++it;
          }
        } catch (abi::__forced_unwind&) {
          throw;  // a thread cancelled inside the range: its unwinding goes on
        } catch (...) {
          // The input range's own error (the encoder's is caught above).
          if (c.count == 0) throw;
          input_error = std::current_exception();
        }
        if (unencodable_input) std::rethrow_exception(unencodable_input);
        if (c.count == 0) {
          if (at_end) return false;
          continue;  // every input of it was unencodable
        }
        c.args = enc.take();
        ++made;
        return true;
      }
    }
  };

  /// The engine behind map, imap, imap_unordered and map_outcomes: a source of chunks over
  /// `inputs`, and a run that sends them.
  template <class R, class... W, class Range, class... X>
  auto make_source(detail::Target& target, Range&& inputs, const MapOptions& options, X&&... extra) {
    constexpr std::size_t nx = sizeof...(X);
    static_assert(nx <= sizeof...(W), "ferry: more extra arguments than the task has parameters");
    static_assert(nx < 256, "ferry: at most 255 extra arguments");
    (detail::require_serializable<W>(), ...);
    detail::require_serializable<R>();
    detail::require_owning_result<R>();
    using View = std::views::all_t<Range>;
    auto src = std::make_shared<MapSource<View, W...>>(std::views::all(std::forward<Range>(inputs)));
    std::size_t total = 0;
    if constexpr (std::ranges::sized_range<View>) total = std::ranges::size(src->view);
    src->chunk = options.chunksize ? options.chunksize : default_chunksize(total);
    src->signature = target.signature;
    src->name = target.name;
    if constexpr (nx > 0) {
      detail::Encoder enc;
      enc.byte(static_cast<std::uint8_t>(nx));
      try {
        [&]<std::size_t... J>(std::index_sequence<J...>, auto&... x) {
          using T = std::tuple<W...>;
          enc(detail::as_param<std::tuple_element_t<sizeof...(W) - nx + J, T>>(x)...);
        }(std::make_index_sequence<nx>{}, extra...);
      } catch (...) {
        throw SerializationError(SerializationStage::encode_arguments, std::string(target.signature),
                                 "the constant extra arguments: " + detail::current_exception_reason(),
                                 target.name);
      }
      src->prefix = enc.take();
    }
    return std::pair{src, total};
  }

  /// Sends a chunk of a map as one call. Through the executor's link, never `this`: an imap
  /// stream may outlive its executor, and its chunks then fail to send (BrokenProcessPool).
  template <class V>
  auto chunk_sender(detail::Target target, bool shared, bool keep) {
    return [link = link_, target = std::move(target), shared, keep](detail::MapChunk<V>& c) {
      auto state = detail::make_state<V>(c.count, c.first);
      submit_linked(*link, target, keep ? detail::Buffer(c.args) : std::move(c.args), c.count,
                    state, shared ? detail::shared_args_flag : 0, c.first);
      c.future = Future<V>(std::move(state));
    };
  }

  /// `inputs` is read where it is, as an lvalue (the map ends before the call returns): an rvalue
  /// range is not moved into the source, a container not copied; a const one is iterated as const.
  template <class R, class... W, class Range, class... X>
  auto map_run(Mode mode, detail::Target target, Range& inputs, MapOptions options, X&&... extra) {
    constexpr std::size_t own = sizeof...(W) - sizeof...(X);
    using V = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    const bool keep = mode == Mode::outcomes;
    auto [src, total] = make_source<R, W...>(target, inputs, options, std::forward<X>(extra)...);
    src->keep = keep;
    detail::MapRun<V> run(
        options, options.max_in_flight, /*ordered=*/!keep, total,
        [src = src](detail::MapChunk<V>& c) {
          return src->template produce<own>(c) ? detail::Produced::chunk : detail::Produced::end;
        },
        chunk_sender<V>(std::move(target), sizeof...(X) > 0, keep));
    if constexpr (std::is_void_v<R>) {
      while (auto c = run.next()) {
        if (auto e = c->future.exception()) {
          run.cancel_all();
          std::rethrow_exception(e);
        }
        run.advance(c->count);
      }
      if (run.stopped()) throw CancelledError("map was stopped (MapOptions::stop)");
    } else {
      // One return type for both modes: map_outcomes takes the outcomes, map the values.
      std::pair<std::vector<R>, std::vector<Outcome<R>>> out;
      if (keep) {
        out.second = outcomes<R>(run, *src, total);
        return out;
      }
      // The chunks are decoded in batches once they have come back: decoding while results still
      // arrive takes the CPU from the threads that receive them (map chunksize 1: 8 % slower).
      // At most max_undecoded wait: each holds its result's bytes (a mapped memfd, one
      // descriptor, from 1 MiB on) until decoded.
      constexpr std::size_t max_undecoded = 256;
      std::vector<Future<V>> done;
      done.reserve(std::min(max_undecoded, total ? (total + src->chunk - 1) / src->chunk : max_undecoded));
      out.first.reserve(total);
      auto decode_done = [&] {
        for (auto& f : done) {
          auto part = f.get();
          out.first.insert(out.first.end(), std::make_move_iterator(part.begin()),
                           std::make_move_iterator(part.end()));
        }
        done.clear();
      };
      while (auto c = run.next()) {
        if (auto e = c->future.exception()) {
          // The first failure in input order, every input before it done: thrown now, what is
          // still out cancelled (what runs is not waited for).
          run.cancel_all();
          std::rethrow_exception(e);
        }
        done.push_back(std::move(c->future));
        run.advance(c->count);
        if (done.size() == max_undecoded) {
          try {
            decode_done();
          } catch (...) {
            run.cancel_all();  // as for a failed chunk: the rest is cancelled
            throw;
          }
        }
      }
      if (run.stopped()) throw CancelledError("map was stopped (MapOptions::stop)");
      decode_done();
      return out;
    }
  }

  template <class R, class Src>
  static std::vector<Outcome<R>> outcomes(detail::MapRun<std::vector<R>>& run, Src& src, std::size_t total) {
    std::vector<Outcome<R>> out;
    out.reserve(total);
    auto record = [&](std::size_t index, std::exception_ptr e) {
      out.emplace_back(index, std::move(e));
      run.advance(1);
    };
    auto cancelled = [](std::size_t i) {
      return std::make_exception_ptr(CancelledError("map was stopped (MapOptions::stop) before input " +
                                                    std::to_string(i) + " ran"));
    };
    // Inputs to run again; once a stop was requested, they are cancelled instead (nothing more is
    // sent, even before next() has seen the stop).
    auto again = [&](detail::MapChunk<std::vector<R>> part) {
      if (!run.stop_requested()) return run.resend(std::move(part));
      for (std::uint32_t i = 0; i < part.count; ++i) record(part.first + i, cancelled(part.first + i));
    };
    auto take = [&](detail::MapChunk<std::vector<R>>& c) {
      std::exception_ptr e = c.future.exception();
      bool undecodable = false;
      if (!e) {
        std::vector<R> values;
        try {
          values = c.future.get();
        } catch (...) {
          // A value that cannot be decoded fails its input as the task's error would (it names
          // that input), or the whole chunk (bytes left over).
          e = std::current_exception();
          undecodable = true;
        }
        if (!e) {
          for (std::size_t i = 0; i < values.size(); ++i) out.emplace_back(c.first + i, std::move(values[i]));
          run.advance(c.count);  // on_progress: what it throws ends map_outcomes
          return;
        }
      }
      auto failed = detail::classify_chunk_failure(e, c.first, c.count);
      switch (failed.kind) {
        case detail::ChunkFailure::input: {
          // That input failed; the others of its chunk run again. Unless its value was what could
          // not be decoded: the values of those before it are here, and are kept (running them
          // again ran their side effects twice); only those after it, whose bytes cannot be read,
          // run again.
          auto k = static_cast<std::uint32_t>(failed.input - c.first);
          std::uint32_t kept = 0;
          if (undecodable) {
            std::vector<R> before = detail::FutureAccess::state(c.future)->values_before_failure();
            if (before.size() == k) {
              for (std::uint32_t i = 0; i < k; ++i) out.emplace_back(c.first + i, std::move(before[i]));
              kept = k;
            }
          }
          if (kept) run.advance(kept);
          record(c.first + k, e);
          if (k > kept) again(c.part(0, k));
          if (k + 1 < c.count) again(c.part(k + 1, c.count));
          return;
        }
        case detail::ChunkFailure::worker:
          if (c.count > 1) {
            // Which input killed the worker is not known: each runs again, alone.
            for (std::uint32_t i = 0; i < c.count; ++i) again(c.part(i, i + 1));
            return;
          }
          [[fallthrough]];
        case detail::ChunkFailure::chunk:
          for (std::uint32_t i = 0; i < c.count; ++i) record(c.first + i, e);
          return;
      }
    };
    for (auto& [index, e] : src.unencodable) record(index, e);
    src.unencodable.clear();
    while (auto c = run.next()) {
      take(*c);
      for (auto& [index, e] : src.unencodable) record(index, e);
      src.unencodable.clear();
    }
    if (run.stopped()) {
      // What was out ends now (cancelled, or run to its end); what was never sent is cancelled.
      for (auto& [seq, c] : run.remaining()) {
        c.future.wait();
        take(c);
      }
      for (std::size_t i = src.next; i < total; ++i) record(i, cancelled(i));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
    return out;
  }

  template <class R, bool Unordered, class... W, class Range, class... X>
  MapStream<R, Unordered> stream(detail::Target target, Range&& inputs, MapOptions options, X&&... extra) {
    static_assert(!std::is_void_v<R>, "ferry: imap needs a task that returns a value (use map)");
    constexpr std::size_t own = sizeof...(W) - sizeof...(X);
    using V = std::vector<R>;
    auto state = std::make_unique<typename MapStream<R, Unordered>::State>();
    state->options = std::move(options);
    auto [src, total] = make_source<R, W...>(target, std::forward<Range>(inputs), state->options,
                                             std::forward<X>(extra)...);
    const std::size_t workers = max_workers();
    // Without a chunksize, the first chunks are small, so that the first results come soon.
    if (!state->options.chunksize) src->ramp = workers;
    std::size_t limit = state->options.max_in_flight ? state->options.max_in_flight : 2 * workers + 2;
    state->run = std::make_unique<detail::MapRun<V>>(
        state->options, limit, /*ordered=*/!Unordered, total,
        [src](detail::MapChunk<V>& c) {
          return src->template produce<own>(c) ? detail::Produced::chunk : detail::Produced::end;
        },
        chunk_sender<V>(std::move(target), sizeof...(X) > 0, false));
    return MapStream<R, Unordered>(std::move(state));
  }

  /// submit_encoded on the executor behind `link` while it lives; once it was destroyed, on the
  /// executor get_reusable_executor replaced it with if that one still lives; else throws
  /// BrokenProcessPool, as a submit after shutdown does.
  static void submit_linked(detail::ExecutorLink& link, const detail::Target& target,
                            detail::Buffer args, std::uint32_t items,
                            std::shared_ptr<detail::StateBase> state, std::uint8_t frame_flags,
                            std::size_t first_input);
  /// `first_input`: for a map chunk, the index of its first input (errors name their input).
  void submit_encoded(const detail::Target& target, detail::Buffer args, std::uint32_t items,
                      std::shared_ptr<detail::StateBase> state, const SubmitOptions& options,
                      std::uint8_t frame_flags = 0, std::size_t first_input = detail::no_input);
  Future<std::string> submit_json_to(detail::Target target, std::string lines, std::uint32_t items,
                                     bool keep_going);
  void fail_encoding(detail::StateBase& state, const detail::Target& target, std::string reason);
  std::size_t default_chunksize(std::size_t total) const;

  /// get_reusable_executor's: makes this executor reusable (it can be replaced).
  void make_reusable();
  /// get_reusable_executor's: replaced by `next`; submissions go there from now on, and this
  /// executor is shut down (without waiting) once those already under way were accepted.
  void hand_over(std::shared_ptr<Executor> next);
  /// Where this handle's submissions go instead of its own pool: the newest executor that
  /// replaced it, or nullptr (never replaced, or broken: as loky, a broken one fails).
  std::shared_ptr<Executor> replacement() const;

  std::shared_ptr<detail::Pool> pool_;
  std::unique_ptr<detail::Succession> succession_;  // only for the reusable executor
  /// What map chunks are sent through (chunk_sender): cut by ~Executor, so that an imap stream
  /// that outlives this executor never reaches it.
  std::shared_ptr<detail::ExecutorLink> link_;
};

/**
@brief The ferry-worker an executor runs when ExecutorOptions::worker_path is empty: $FERRY_WORKER,
else the one installed (or built) next to this libferry, else next to the executable, else $PATH.
*/
FERRY_API std::filesystem::path default_worker_path();

/**
@brief The process-wide executor (loky's get_reusable_executor): reused when `options` are
compatible with the current one, resized when only `max_workers` differs, replaced when it was
shut down or broken or options differ otherwise. Thread-safe.

A handle to a replaced executor still accepts submissions (submit, map, submit_json): they go to
the newest replacement, as in loky 3.5, so a thread that got the executor just before another
call replaced it does not fail. Unless the replaced executor was broken: that one throws
BrokenProcessPool, as in loky. Its other members (shutdown, resize, is_shutdown...) concern its
own pool.
@code
auto a = ferry::get_reusable_executor({.max_workers = 2});
auto b = ferry::get_reusable_executor({.max_workers = 2, .env = {{"K", "1"}}});  // replaces a
a->submit(square, 3).get();   // 9, computed by b's workers
@endcode
*/
FERRY_API std::shared_ptr<Executor> get_reusable_executor(const ExecutorOptions& options = {});

}  // namespace ferry
