# SPDX-License-Identifier: BSD-3-Clause
# ferry_add_report_sources(target): compiles `ferry report`'s reader, summary and page
# (cli/trace_reader, cli/trace_summary, cli/report_html, cli/json) and the page's template
# (cli/report/, embedded as cli/CMakeLists.txt embeds it for the ferry command) into `target`:
# the trace fuzzer (tests/fuzz) and test_report, which replays its corpus. One target per
# directory: the embedded sources are written to that directory's build tree.
function(ferry_add_report_sources target)
  set(_cli ${PROJECT_SOURCE_DIR}/cli)
  target_sources(${target} PRIVATE ${_cli}/trace_reader.cpp ${_cli}/trace_summary.cpp ${_cli}/report_html.cpp
    ${_cli}/json.cpp)
  foreach(part html css js)
    set(_in ${_cli}/report/report.${part})
    set(_out ${CMAKE_CURRENT_BINARY_DIR}/${target}_embedded_report_${part}.cpp)
    add_custom_command(OUTPUT ${_out}
      COMMAND ${CMAKE_COMMAND} -DINPUT=${_in} -DOUTPUT=${_out} -DSYMBOL=report_${part}
              -DNAMESPACE=ferry::cli::assets -DHEADER=${_cli}/report_assets.hpp
              -P ${PROJECT_SOURCE_DIR}/cmake/FerryEmbedText.cmake
      DEPENDS ${_in} ${PROJECT_SOURCE_DIR}/cmake/FerryEmbedText.cmake
      COMMENT "Embedding cli/report/report.${part} for ${target}"
      VERBATIM)
    target_sources(${target} PRIVATE ${_out})
  endforeach()
endfunction()
