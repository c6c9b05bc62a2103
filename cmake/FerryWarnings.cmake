# SPDX-License-Identifier: BSD-3-Clause
# ferry_warnings: warning and sanitizer flags for ferry's own targets only (linked PRIVATE, never
# propagated to consumers).
add_library(ferry_warnings INTERFACE)
target_compile_options(ferry_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align -Woverloaded-virtual
  # GCC < 14 warns about every member a designated initialiser leaves to its default.
  -Wno-missing-field-initializers
  $<$<BOOL:${FERRY_WARNINGS_AS_ERRORS}>:-Werror>)

if(FERRY_SANITIZE)
  string(REPLACE ";" "," _ferry_sanitizers "${FERRY_SANITIZE}")
  add_compile_options(-fsanitize=${_ferry_sanitizers} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_ferry_sanitizers})
  if("undefined" IN_LIST FERRY_SANITIZE)
    # UBSan's vptr check probes memory through a pipe: in a worker whose descriptor table a task
    # filled on purpose (the leak tests, Limits::open_files), every virtual call then reports a
    # false "invalid vptr" and ends the worker. The other UBSan checks stay.
    add_compile_options(-fno-sanitize=vptr)
  endif()
endif()

# Debug information records the directory each object was compiled in: map the build directory
# away, so that no installed binary names it (an installed ferry must not point back at the tree
# it was built in; tests/packaging/install_test.sh checks every installed file).
target_compile_options(ferry_warnings INTERFACE "-fdebug-prefix-map=${PROJECT_BINARY_DIR}=.")
