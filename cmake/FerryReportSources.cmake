# SPDX-License-Identifier: BSD-3-Clause
# ferry_add_report_sources(target): compiles `ferry report`'s reader, summary and page
# (cli/trace_reader, cli/trace_summary, cli/report_html, cli/json) and the page's template
# (cli/report/report.{html,css,js}, as raw string literals of generated sources written again when
# a template file changes) into `target`: the ferry command (cli/), test_report (which replays the
# trace fuzz corpus in-process) and the trace fuzzer (tests/fuzz, built with its own flags, hence
# sources rather than a library). The generated sources go to the calling directory's build tree,
# named after the target.
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
