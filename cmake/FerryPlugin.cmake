# SPDX-License-Identifier: BSD-3-Clause
# ferry_add_plugin(<name> SOURCES <src>...
#                  [LINK_LIBRARIES <lib>...]
#                  [OUTPUT_DIRECTORY <dir>])
#
# Builds a ferry task plugin: the SHARED library target `ferry_plugin_<name>`, written as
# lib<name>.so. <name> is the plugin's name: what `plugin:task` and `ferry list` call it.
#
#   SOURCES           the plugin's sources (required); each task is registered with FERRY_TASK.
#   LINK_LIBRARIES    what the tasks use, linked PRIVATE (targets such as ZLIB::ZLIB, library
#                     names, -l flags): a host that links the plugin does not inherit them.
#                     Workers load the plugin with the dynamic loader's usual rules, so these
#                     libraries must be found wherever workers run (a system directory, the
#                     plugin's RPATH, or LD_LIBRARY_PATH through ExecutorOptions::env).
#   OUTPUT_DIRECTORY  where lib<name>.so is written (default: CMAKE_LIBRARY_OUTPUT_DIRECTORY, else
#                     the current binary directory). Submitting by name searches directories
#                     (ExecutorOptions::plugin_dirs, $FERRY_PLUGIN_PATH, ferry --plugin-dir):
#                     give plugins a directory of their own.
#
# The target has hidden visibility (only FERRY_TASK records and FERRY_EXPORT functions are
# exported, so plugins cannot shadow each other's symbols) and links ferry::plugin only (ferry's
# headers, cereal, Boost.DLL; not libferry). A host that submits by function links the target:
# target_link_libraries(host PRIVATE ferry::core ferry_plugin_<name>). Further target_* calls
# (include directories, definitions) apply to it as to any library.
# Example (samples/zlib_plugin/):
#   find_package(ZLIB REQUIRED)
#   ferry_add_plugin(zl SOURCES zl.cpp LINK_LIBRARIES ZLIB::ZLIB
#                    OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
function(ferry_add_plugin name)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY" "SOURCES;LINK_LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "ferry_add_plugin(${name}): SOURCES is required")
  endif()
  set(target ferry_plugin_${name})
  add_library(${target} SHARED ${ARG_SOURCES})
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME ${name}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
  # find_package(ferry)'s targets are seen only in the directory that called it and below: from a
  # sibling directory the plugin linked the bare name ferry_plugin_api, and its build failed on
  # <ferry/task.hpp> not found, saying nothing of why.
  if(NOT TARGET ferry::plugin)
    message(FATAL_ERROR "ferry_add_plugin(${name}): the target ferry::plugin is not visible in "
      "${CMAKE_CURRENT_SOURCE_DIR}: call find_package(ferry) in this directory or one above it "
      "(its targets are seen only there)")
  endif()
  target_link_libraries(${target} PUBLIC ferry::plugin)
  if(ARG_LINK_LIBRARIES)
    target_link_libraries(${target} PRIVATE ${ARG_LINK_LIBRARIES})
  endif()
endfunction()
