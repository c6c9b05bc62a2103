# SPDX-License-Identifier: BSD-3-Clause
# Writes a text file into a C++ source as a raw string literal, at build time:
#   cmake -DINPUT=file -DOUTPUT=file.cpp -DSYMBOL=name -DNAMESPACE=ns -DHEADER=decl.hpp -P FerryEmbedText.cmake
# defines `const std::string_view ns::name` (declared extern in HEADER). Used for the report
# page's template (cli/report/), so that the template stays a readable HTML, CSS and JS file.
foreach(var INPUT OUTPUT SYMBOL NAMESPACE HEADER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "FerryEmbedText.cmake: -D${var}=... is required")
  endif()
endforeach()
file(READ "${INPUT}" content)
set(delimiter "ferry_text")
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains )${delimiter}\", which would end the raw string early")
endif()
get_filename_component(input_name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${input_name} by cmake/FerryEmbedText.cmake: edit that file, not this one.\n"
  "#include \"${HEADER}\"\n\n"
  "namespace ${NAMESPACE} {\n\n"
  "const std::string_view ${SYMBOL} = R\"${delimiter}(${content})${delimiter}\";\n\n"
  "}  // namespace ${NAMESPACE}\n")
# Only a changed file is written again, so that an unchanged template does not rebuild.
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUTPUT}.tmp" "${OUTPUT}")
file(REMOVE "${OUTPUT}.tmp")
