# SPDX-License-Identifier: BSD-3-Clause
# Readme.examples.markers: every ```cpp block of README.md and docs/from-loky.md has a marker the
# test suite understands (ReadmeExamples.cmake). Run as: cmake -DSOURCE_DIR=<repo> -P CheckMarkers.cmake
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/ReadmeExamples.cmake)
set(all_errors "")
set(blocks 0)
foreach(page README.md docs/from-loky.md)
  ferry_readme_check(${SOURCE_DIR}/${page} errors)
  string(APPEND all_errors "${errors}")
  ferry_readme_parse(${SOURCE_DIR}/${page} B)
  math(EXPR blocks "${blocks} + ${B_COUNT}")
endforeach()
if(NOT all_errors STREQUAL "")
  message(FATAL_ERROR "C++ examples the test suite cannot take:\n${all_errors}")
endif()
message(STATUS "${blocks} C++ examples, each with its marker")
