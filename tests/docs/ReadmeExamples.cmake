# SPDX-License-Identifier: BSD-3-Clause
# The C++ examples of a Markdown page: each fenced ```cpp block, with the HTML comment just before
# it (invisible on GitHub) that says how the test suite compiles it:
#
#   <!-- example: fragment -->           up to the block's last blank line at namespace scope, the
#                                        rest the body of a function (a coroutine if it co_awaits);
#                                        a block with no blank line is all function body. Names the
#                                        page leaves undeclared come from tests/docs/readme_context.hpp
#   <!-- example: declarations -->       the whole block at namespace scope (with that context)
#   <!-- example: plugin NAME -->         a whole plugin source: ferry_add_plugin(readme_NAME), run by
#                                        tests/docs/NAME_host.cpp when that file exists
#   <!-- example: program NAME[, runs][, mpi] -->   a whole program; `runs`: the test suite runs
#                                        it; `mpi`: links ferry::mpi (built only with the MPI backend)
#   <!-- example: not compiled, REASON -->   kept out, with the reason (keep these rare)
#
# A ```cpp block with no such marker is an error (Readme.examples.markers), so that no example is
# added untested. The page is read as one string, never as a CMake list: code holds semicolons.

# ferry_readme_parse(FILE PREFIX): sets, in the caller's scope, PREFIX_COUNT and for each block
# i in [0, COUNT): PREFIX_<i>_LINE (the line of its first code line, 1-based), PREFIX_<i>_MARKER
# (the marker's text after "example:", stripped; empty when there is none) and PREFIX_<i>_BODY.
function(ferry_readme_parse file prefix)
  file(READ "${file}" rest)
  set(count 0)
  set(line 1)  # the line `rest` starts on
  while(TRUE)
    # The next fence at the start of a line ("```" at the very start of the file too).
    string(FIND "${rest}" "\n```" pos)
    if(pos EQUAL -1)
      break()
    endif()
    string(SUBSTRING "${rest}" 0 ${pos} before)
    math(EXPR start "${pos} + 1")
    string(SUBSTRING "${rest}" ${start} -1 rest)
    _ferry_readme_count_lines("${before}" n)
    math(EXPR line "${line} + ${n} + 1")  # now the fence's line
    # The fence's info string.
    string(FIND "${rest}" "\n" eol)
    if(eol EQUAL -1)
      break()
    endif()
    math(EXPR info_len "${eol} - 3")
    string(SUBSTRING "${rest}" 3 ${info_len} info)
    string(STRIP "${info}" info)
    math(EXPR start "${eol} + 1")
    string(SUBSTRING "${rest}" ${start} -1 rest)
    math(EXPR line "${line} + 1")  # the block's first line
    # The block runs to the next fence line.
    if(rest MATCHES "^```")
      set(body "")
      set(close 0)
    else()
      string(FIND "${rest}" "\n```" close)
      if(close EQUAL -1)
        message(FATAL_ERROR "${file}:${line}: a code block that is never closed")
      endif()
      string(SUBSTRING "${rest}" 0 ${close} body)
      string(APPEND body "\n")
      math(EXPR close "${close} + 1")
    endif()
    string(SUBSTRING "${rest}" ${close} -1 after)
    # Skip the closing fence line itself.
    string(FIND "${after}" "\n" eol)
    if(eol EQUAL -1)
      set(after "")
    else()
      math(EXPR start "${eol} + 1")
      string(SUBSTRING "${after}" ${start} -1 after)
    endif()
    if(info STREQUAL "cpp" OR info STREQUAL "c++" OR info STREQUAL "cxx")
      # The marker: the last non-blank line before the fence.
      string(REGEX REPLACE "[ \t\r\n]+$" "" trimmed "${before}")
      string(FIND "${trimmed}" "\n" last_eol REVERSE)
      math(EXPR last_start "${last_eol} + 1")
      string(SUBSTRING "${trimmed}" ${last_start} -1 last_line)
      string(STRIP "${last_line}" last_line)
      set(marker "")
      if(last_line MATCHES "^<!-- *example: *(.*[^ ]) *-->$")
        set(marker "${CMAKE_MATCH_1}")
      endif()
      set(${prefix}_${count}_LINE ${line} PARENT_SCOPE)
      set(${prefix}_${count}_MARKER "${marker}" PARENT_SCOPE)
      set(${prefix}_${count}_BODY "${body}" PARENT_SCOPE)
      math(EXPR count "${count} + 1")
    endif()
    _ferry_readme_count_lines("${body}" n)
    math(EXPR line "${line} + ${n} + 1")  # the line after the closing fence
    set(rest "${after}")
  endwhile()
  set(${prefix}_COUNT ${count} PARENT_SCOPE)
endfunction()

# How many newlines TEXT holds.
function(_ferry_readme_count_lines text out)
  string(REGEX REPLACE "[^\n]" "" newlines "${text}")
  string(LENGTH "${newlines}" n)
  set(${out} ${n} PARENT_SCOPE)
endfunction()

# ferry_readme_marker(MARKER KIND NAME OPTIONS): splits a marker: KIND is fragment, declarations,
# plugin, program or "not compiled"; NAME the word after plugin or program; OPTIONS what follows
# the first comma, a CMake list of stripped words (for "not compiled": its reason, one element).
function(ferry_readme_marker marker kind_out name_out options_out)
  set(kind "")
  set(name "")
  set(options "")
  string(FIND "${marker}" "," comma)
  if(comma EQUAL -1)
    set(head "${marker}")
    set(tail "")
  else()
    string(SUBSTRING "${marker}" 0 ${comma} head)
    math(EXPR start "${comma} + 1")
    string(SUBSTRING "${marker}" ${start} -1 tail)
  endif()
  string(STRIP "${head}" head)
  if(head MATCHES "^(fragment|declarations|not compiled)$")
    set(kind "${head}")
  elseif(head MATCHES "^(plugin|program) +([A-Za-z0-9_]+)$")
    set(kind "${CMAKE_MATCH_1}")
    set(name "${CMAKE_MATCH_2}")
  endif()
  if(kind STREQUAL "not compiled")
    string(STRIP "${tail}" tail)
    set(options "${tail}")
  elseif(NOT tail STREQUAL "")
    string(REPLACE "," ";" words "${tail}")
    foreach(word IN LISTS words)
      string(STRIP "${word}" word)
      list(APPEND options "${word}")
    endforeach()
  endif()
  set(${kind_out} "${kind}" PARENT_SCOPE)
  set(${name_out} "${name}" PARENT_SCOPE)
  set(${options_out} "${options}" PARENT_SCOPE)
endfunction()

# ferry_readme_check(FILE ERRORS_OUT): the page's blocks whose marker is missing or not understood,
# one line each ("README.md:42: ..."), as a string (empty when all are fine).
function(ferry_readme_check file errors_out)
  ferry_readme_parse("${file}" B)
  get_filename_component(page "${file}" NAME)
  set(errors "")
  set(names "")
  math(EXPR last "${B_COUNT} - 1")
  foreach(i RANGE 0 ${last})
    if(B_COUNT EQUAL 0)
      break()
    endif()
    set(marker "${B_${i}_MARKER}")
    set(where "${page}:${B_${i}_LINE}")
    if(marker STREQUAL "")
      string(APPEND errors "${where}: a C++ example with no marker: put <!-- example: fragment --> "
        "(or declarations, plugin NAME, program NAME[, runs], not compiled, REASON) on the line "
        "before its fence (tests/docs/ReadmeExamples.cmake says what each does)\n")
      continue()
    endif()
    ferry_readme_marker("${marker}" kind name options)
    if(kind STREQUAL "")
      string(APPEND errors "${where}: marker 'example: ${marker}' not understood\n")
    elseif(kind STREQUAL "not compiled" AND options STREQUAL "")
      string(APPEND errors "${where}: 'not compiled' needs a reason after a comma\n")
    elseif(kind MATCHES "^(plugin|program)$")
      if(name IN_LIST names)
        string(APPEND errors "${where}: a second example named '${name}'\n")
      endif()
      list(APPEND names "${name}")
      foreach(option IN LISTS options)
        if(NOT option MATCHES "^(runs|mpi)$" OR kind STREQUAL "plugin")
          string(APPEND errors "${where}: option '${option}' not understood for ${kind}\n")
        endif()
      endforeach()
    elseif(NOT options STREQUAL "")
      string(APPEND errors "${where}: ${kind} takes no options ('${options}')\n")
    endif()
  endforeach()
  # A fence indented into a list item is not read as an example: say so rather than pass it over.
  file(READ "${file}" text)
  string(REGEX MATCHALL "\n[ \t]+```[ \t]*(cpp|c\\+\\+|cxx)[ \t]*\n" indented "\n${text}")
  list(LENGTH indented n)
  if(n GREATER 0)
    string(APPEND errors "${page}: ${n} C++ block(s) with an indented fence: the test suite reads "
      "only fences at the start of a line\n")
  endif()
  set(${errors_out} "${errors}" PARENT_SCOPE)
endfunction()
