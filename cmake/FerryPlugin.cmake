# SPDX-License-Identifier: BSD-3-Clause
# ferry_add_plugin(<name> SOURCES <src>... [OUTPUT_DIRECTORY <dir>] [LINK_LIBRARIES <lib>...])
#
# Builds a ferry task plugin: a SHARED library `ferry_plugin_<name>` with output name `<name>`
# (lib<name>.so), hidden visibility (only FERRY_TASK records and FERRY_EXPORT functions are
# exported, so plugins cannot shadow each other's symbols), linked to ferry::plugin only.
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
  if(TARGET ferry::plugin)
    target_link_libraries(${target} PUBLIC ferry::plugin)
  else()
    target_link_libraries(${target} PUBLIC ferry_plugin_api)
  endif()
  if(ARG_LINK_LIBRARIES)
    target_link_libraries(${target} PRIVATE ${ARG_LINK_LIBRARIES})
  endif()
endfunction()
