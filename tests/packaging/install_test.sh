#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Installs ferry into a temporary prefix, builds samples/external_plugin against it with
# find_package(ferry), runs its task through the installed `ferry run` and its host, and builds a
# host with pkg-config. No FERRY_* environment: the installed pieces must find each other.
#   install_test.sh <build dir> <source dir> <work dir>
set -euo pipefail
build=$1 src=$2 work=$3
unset FERRY_WORKER FERRY_PLUGIN_PATH FERRY_CACHE_DIR FERRY_CXX FERRY_WRAP_FLAGS
rm -rf "$work" && mkdir -p "$work"
# The prefix lies outside the build tree: every installed file is searched for the build
# directory's path below, which a prefix inside it would name by itself.
root=$(mktemp -d "${TMPDIR:-/tmp}/ferry-prefix-XXXXXX")  # 0700, made before the installs
trap 'rm -rf "$root"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# What README promises of an install whatever the umask: directories 0755, files 0644 or 0755
# (ferry_wrap_prelude's record of what the prelude read and its lock stay the installer's: 0600
# and 0200). Prints each directory or file under $1 that is otherwise, but those named after it,
# which existed before the install and are not ferry's: those it must leave as they were.
wrong_modes() {
  local top=$1 mode type path keep
  shift
  find "$top" -printf '%m %y %p\n' | while read -r mode type path; do
    for keep in "$@"; do [ "$path" = "$keep" ] && continue 2; done
    case "$type:$mode:$path" in
      d:755:* | f:644:* | f:755:* | l:*) ;;
      f:600:*/wrap-prelude/prelude-*.hpp.inputs | f:200:*/wrap-prelude/prelude-*.lock) ;;
      *) echo "$mode $path" ;;
    esac
  done
}

# Under umask 077 (root's, on some systems), into a prefix whose parents do not exist either:
# every directory the install makes, the prefix and the ones above it included, is 0755, or other
# users cannot use what root installed (mkdir took CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
# less the umask: bin/, lib/, lib/cmake/, libexec/, include/, share/ and the prefix were 0700).
# The tests below use this install.
prefix=$root/new/opt/ferry
(umask 077 && cmake --install "$build" --prefix "$prefix") > "$work/install.log"
wrong=$(wrong_modes "$root/new")
[ -z "$wrong" ] || fail "installed under umask 077, not the modes README promises:"$'\n'"$wrong"
[ "$(stat -c %a "$root")" = 700 ] || fail "the install changed the mode of $root, which it did not make"

# Under umask 000, into a prefix that exists, as /usr/local does: what the install makes must not
# be writable by group or others (under 002 or 000 bin/, lib/, include/... were, so that another
# user could replace ferry-worker or libferry, and ferry then refused its own files). Directories
# that were there before and are not ferry's keep their modes (a prefix of /usr/local must not
# change /usr/local/lib); ferry's own, left by an earlier install, are made 0755.
existing=$root/local
mkdir -m 0750 "$existing" "$existing/lib" && mkdir -m 0700 "$existing/share"
mkdir -m 0775 "$existing/share/ferry"
(umask 0000 && cmake --install "$build" --prefix "$existing") > "$work/install-umask000.log"
wrong=$(wrong_modes "$existing" "$existing" "$existing/lib" "$existing/share")
[ -z "$wrong" ] || fail "installed under umask 000, not the modes README promises:"$'\n'"$wrong"
for d in "$existing:750" "$existing/lib:750" "$existing/share:700"; do
  [ "$(stat -c %a "${d%:*}")" = "${d##*:}" ] || fail "the install changed the mode of ${d%:*}, which it did not make"
done

# Staged (DESTDIR, as packagers do) under umask 077: the same modes in the staging tree, the
# directories above the prefix in it included (a package records them), and nothing made outside.
stage=$root/stage
staged_prefix=/ferry-install-test-$$/opt/ferry
(umask 077 && DESTDIR=$stage cmake --install "$build" --prefix "$staged_prefix") > "$work/install-destdir.log"
[ ! -e "${staged_prefix%/opt/ferry}" ] || fail "a DESTDIR install made ${staged_prefix%/opt/ferry}"
[ -x "$stage$staged_prefix/bin/ferry-worker" ] || fail "the DESTDIR install put no ferry-worker in $stage"
wrong=$(wrong_modes "$stage")
[ -z "$wrong" ] || fail "staged under umask 077, not the modes README promises:"$'\n'"$wrong"

for f in bin/ferry bin/ferry-worker include/ferry/ferry.hpp lib/cmake/ferry/ferryConfig.cmake \
         lib/cmake/ferry/FerryPlugin.cmake lib/pkgconfig/ferry.pc; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
ls "$prefix"/lib/libferry.so* > /dev/null || fail "libferry not installed"
# An install whose prelude cannot be precompiled (no compiler) says so as a CMake warning, not
# only in a line of ferry_wrap_prelude's among the install's.
bad_prefix=$(mktemp -d "${TMPDIR:-/tmp}/ferry-noprelude-XXXXXX")
rc=0
FERRY_CXX=/nonexistent/c++ cmake --install "$build" --prefix "$bad_prefix" > "$work/install-noprelude.log" 2>&1 || rc=$?
rm -rf "$bad_prefix"
[ "$rc" -eq 0 ] || fail "install without a compiler failed: $(cat "$work/install-noprelude.log")"
grep -q 'CMake Warning' "$work/install-noprelude.log" ||
  fail "no warning from an install whose prelude was not precompiled: $(tail -5 "$work/install-noprelude.log")"

# No installed file may name the build directory: an installed ferry must never execute, include
# or load anything from where it was built (that directory may be gone, or someone else's).
if grep -rlF "$build" "$prefix" > "$work/leaks.txt"; then
  fail "installed files name the build directory $build: $(tr '\n' ' ' < "$work/leaks.txt")"
fi

# Nor an RPATH the loader reads against the current directory (an empty or relative element).
bash "$src/tests/packaging/runpath_check.sh" "$prefix" > "$work/runpaths.log" 2>&1 || fail "$(cat "$work/runpaths.log")"

cmake -S "$src/samples/external_plugin" -B "$work/ext" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/ext" -j2 > "$work/build.log"
# A plugin and host built against the installed package the same.
bash "$src/tests/packaging/runpath_check.sh" "$work/ext" > "$work/runpaths-ext.log" 2>&1 ||
  fail "$(cat "$work/runpaths-ext.log")"

# ferry_add_plugin where find_package(ferry)'s targets cannot be seen (a sibling directory): a
# configure error that says so, not a build that fails on <ferry/task.hpp> not found.
mkdir -p "$work/sibling_src/found" "$work/sibling_src/plugin"
printf 'cmake_minimum_required(VERSION 3.20)\nproject(sibling LANGUAGES CXX)\nadd_subdirectory(found)\nadd_subdirectory(plugin)\n' \
  > "$work/sibling_src/CMakeLists.txt"
echo 'find_package(ferry 0.1 REQUIRED)' > "$work/sibling_src/found/CMakeLists.txt"
echo 'ferry_add_plugin(sibling SOURCES sibling.cpp)' > "$work/sibling_src/plugin/CMakeLists.txt"
touch "$work/sibling_src/plugin/sibling.cpp"
if cmake -S "$work/sibling_src" -B "$work/sibling" -DCMAKE_PREFIX_PATH="$prefix" > "$work/sibling.log" 2>&1; then
  fail "ferry_add_plugin without ferry::plugin in sight configured (see $work/sibling.log)"
fi
# (CMake wraps the message's lines)
tr -s ' \n' '  ' < "$work/sibling.log" | grep -q 'call find_package(ferry) in this directory or one above it' ||
  fail "ferry_add_plugin without ferry::plugin in sight: $(cat "$work/sibling.log")"

out=$("$prefix/bin/ferry" run --plugin-dir "$work/ext" triple 14)
[ "$out" = "42" ] || fail "ferry run triple 14 printed '$out'"
out=$("$prefix/bin/ferry" run --plugin-dir "$work/ext" shout '"ferry"')
[ "$out" = '"FERRY!"' ] || fail "ferry run shout printed '$out'"

out=$(cd / && "$work/ext/external_host")
grep -q "triple(14) = 42" <<< "$out" || fail "external_host printed '$out'"
grep -q "shout = FERRY!" <<< "$out" || fail "external_host printed '$out'"

cat > "$work/pc_host.cpp" <<'CPP'
#include <ferry/ferry.hpp>
#include <iostream>
int main(int, char** argv) {
  ferry::Executor ex({.max_workers = 1, .plugin_dirs = {argv[1]}});
  std::cout << ex.submit<int>("triple", 5).get() << "\n";
}
CPP
# shellcheck disable=SC2046
c++ "$work/pc_host.cpp" -o "$work/pc_host" \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs ferry)
out=$("$work/pc_host" "$work/ext")
[ "$out" = "15" ] || fail "pkg-config host printed '$out'"
# ferry's headers through pkg-config's -I (not a system directory: their warnings show) give none
# with -Wall -Wextra: GCC before 14 warned of members a designated initialiser of theirs left out.
cat > "$work/warnings.cpp" <<'CPP'
#include <ferry/ferry.hpp>
#include <vector>
int add(int a, int b);
int main() {
  ferry::ExecutorOptions options;
  options.max_workers = 1;
  ferry::Executor ex(options);
  std::vector<int> in = {1, 2};
  int total = ex.submit(add, 1, 2).get() + ex.submit<int>("add", 1, 2).get() +
              ex.submit<int>(ferry::TaskRef{"add", "libm.so"}, 1, 2).get();
  for (int v : ex.map(add, in, {}, 3)) total += v;
  for (int v : ex.map<int>("add", in, {}, 3)) total += v;
  for (int v : ex.imap(add, in, {}, 3)) total += v;
  return total;
}
CPP
# shellcheck disable=SC2046
c++ -std=c++20 -Wall -Wextra -Werror -fsyntax-only "$work/warnings.cpp" \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags ferry) 2> "$work/warnings.log" ||
  fail "ferry's headers warn with -Wall -Wextra: $(grep -m5 'warning' "$work/warnings.log")"

# FERRY_WRAP from the installed copy: the precompiled prelude installed with it is the one it
# uses (a fresh cache gets the plugin and no prelude of its own).
cat > "$work/wrap_host.cpp" <<'CPP'
#include <ferry/ferry.hpp>
#include <iostream>
FERRY_WRAP(twice, int twice(int x) { return 2 * x; })
int main() {
  ferry::Executor ex({.max_workers = 1});
  std::cout << ex.submit(twice, 21).get() << "\n";
}
CPP
# shellcheck disable=SC2046
c++ "$work/wrap_host.cpp" -o "$work/wrap_host" \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs ferry)
mkdir -m 700 "$work/cache"
out=$(FERRY_CACHE_DIR="$work/cache" "$work/wrap_host")
[ "$out" = "42" ] || fail "wrap host printed '$out'"
ls "$work/cache"/plugins/wrap-*.so > /dev/null 2>&1 || fail "no wrap plugin in the cache"
if ls "$work/cache"/prelude-* > /dev/null 2>&1; then
  fail "the installed precompiled prelude was not used: the cache built its own ($(ls "$work/cache"))"
fi

# With the MPI backend built: its pieces are installed, find_package(ferry COMPONENTS mpi) gives
# ferry::mpi, and a host run as an MPI singleton finds the installed ferry-mpi-worker by itself.
if grep -q '^FERRY_WITH_MPI:BOOL=ON' "$build/CMakeCache.txt"; then
  for f in bin/ferry-mpi-worker include/ferry/mpi.hpp lib/cmake/ferry/ferryMpiTargets.cmake; do
    [ -e "$prefix/$f" ] || fail "not installed: $f"
  done
  mkdir -p "$work/mpi_src"
  cat > "$work/mpi_src/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(mpi_host LANGUAGES CXX)
find_package(ferry 0.1 REQUIRED COMPONENTS mpi)
add_executable(mpi_host host.cpp)
target_link_libraries(mpi_host PRIVATE ferry::core ferry::mpi)
CMAKE
  cat > "$work/mpi_src/host.cpp" <<'CPP'
#include <ferry/ferry.hpp>
#include <ferry/mpi.hpp>
#include <iostream>
int main(int, char** argv) {
  ferry::mpi::enable();
  ferry::Executor ex({.max_workers = 1, .plugin_dirs = {argv[1]}, .backend = "mpi"});
  std::cout << ex.submit<int>("triple", 6).get() << "\n";
}
CPP
  cmake -S "$work/mpi_src" -B "$work/mpi" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_TYPE=Release > "$work/mpi_configure.log"
  cmake --build "$work/mpi" -j2 > "$work/mpi_build.log"
  out=$(cd / && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo \
        timeout 120 "$work/mpi/mpi_host" "$work/ext" 2>&1) || fail "mpi host: $out"
  grep -qx "18" <<< "$out" || fail "mpi host printed '$out'"
fi
# The prefix moved as a whole (a relocated package, a copy): ferry finds its worker, pkg-config its
# flags and FERRY_WRAP its headers from where they are now (RUNPATHs from $ORIGIN, ferry.pc from
# its own place). The shipped prelude is not used there (it was made for the headers' old place,
# which its key names): a cache makes its own.
moved=$(mktemp -d "${TMPDIR:-/tmp}/ferry-moved-XXXXXX")
trap 'rm -rf "$root" "$moved"' EXIT
mv "$prefix" "$moved/ferry"
out=$("$moved/ferry/bin/ferry" run --plugin-dir "$work/ext" triple 14)
[ "$out" = "42" ] || fail "moved: ferry run triple 14 printed '$out'"
"$moved/ferry/bin/ferry" info | grep -qxF "worker        $moved/ferry/bin/ferry-worker" ||
  fail "moved: ferry info names another worker: $("$moved/ferry/bin/ferry" info | grep '^worker')"
for host in pc_host wrap_host; do
  # shellcheck disable=SC2046
  c++ "$work/$host.cpp" -o "$work/moved_$host" \
      $(PKG_CONFIG_PATH="$moved/ferry/lib/pkgconfig" pkg-config --cflags --libs ferry)
done
out=$("$work/moved_pc_host" "$work/ext")
[ "$out" = "15" ] || fail "moved: pkg-config host printed '$out'"
mkdir -m 700 "$work/moved_cache"
out=$(FERRY_CACHE_DIR="$work/moved_cache" "$work/moved_wrap_host")
[ "$out" = "42" ] || fail "moved: wrap host printed '$out'"
ls "$work/moved_cache"/prelude-* > /dev/null 2>&1 || fail "moved: the old place's prelude was used"
# README's way to make it again there (also for a DESTDIR install): then no cache makes its own.
(cd "$moved/ferry" && libexec/ferry/ferry_wrap_prelude share/ferry/wrap-prelude) > /dev/null
mkdir -m 700 "$work/moved_cache2"
out=$(FERRY_CACHE_DIR="$work/moved_cache2" "$work/moved_wrap_host")
[ "$out" = "42" ] || fail "moved, prelude made again: wrap host printed '$out'"
if ls "$work/moved_cache2"/prelude-* > /dev/null 2>&1; then
  fail "moved: the prelude made again in the prefix was not used ($(ls "$work/moved_cache2"))"
fi
echo "install, find_package, pkg-config, ferry run, a moved prefix: all good"
