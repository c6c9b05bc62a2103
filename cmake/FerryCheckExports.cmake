# SPDX-License-Identifier: BSD-3-Clause
# Checks what libferry.so exports against docs/design.md, "What libferry exports" (issue 11):
#   cmake -DLIB=<libferry.so> -DNM=<nm> -DDOC=<docs/design.md> -P FerryCheckExports.cmake
# Fails when
#  - a dynamic symbol outside namespace ferry is exported (typeinfo, vtables and thunks count as
#    the symbol they belong to);
#  - a ferry::detail symbol is exported that no entry of the documented list covers: internals
#    reach other modules only through that list;
#  - an entry of the list covers no exported symbol: the list says exactly what is exported.
# An entry is a qualified name (a function, or a class whose members it then covers). The list is
# the fenced block between <!-- exports:begin --> and <!-- exports:end -->, one entry per line
# (first word; the rest of the line says who needs it); lines starting with '#' are headings.
cmake_minimum_required(VERSION 3.20)
foreach(var LIB NM DOC)
  if(NOT ${var})
    message(FATAL_ERROR "FerryCheckExports: -D${var}=... is required")
  endif()
endforeach()

file(READ "${DOC}" _doc)
string(FIND "${_doc}" "<!-- exports:begin -->" _begin)
string(FIND "${_doc}" "<!-- exports:end -->" _end)
if(_begin EQUAL -1 OR _end EQUAL -1 OR _end LESS _begin)
  message(FATAL_ERROR "${DOC}: no <!-- exports:begin --> ... <!-- exports:end --> list")
endif()
math(EXPR _len "${_end} - ${_begin}")
string(SUBSTRING "${_doc}" ${_begin} ${_len} _block)
string(REPLACE "\n" ";" _block_lines "${_block}")
set(_entries "")
foreach(_line IN LISTS _block_lines)
  string(STRIP "${_line}" _line)
  if(_line MATCHES "^ferry::[A-Za-z0-9_:]+")
    list(APPEND _entries "${CMAKE_MATCH_0}")
  endif()
endforeach()
list(LENGTH _entries _entry_count)
if(_entry_count EQUAL 0)
  message(FATAL_ERROR "${DOC}: the exports list has no entries")
endif()

execute_process(COMMAND "${NM}" -D --defined-only -C "${LIB}"
  OUTPUT_VARIABLE _nm ERROR_VARIABLE _nm_err RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only -C ${LIB} failed: ${_nm_err}")
endif()
string(REPLACE ";" "\\;" _nm "${_nm}")  # demangled names may hold ';' (none today; be safe)
string(REPLACE "\n" ";" _nm_lines "${_nm}")

set(_problems "")
set(_total 0)
set(_detail 0)
set(_used "")
foreach(_line IN LISTS _nm_lines)
  # "<address> <type> <name>"; absolute symbols (the version node of a versioned soname) have
  # type A and are not code or data of ours.
  if(NOT _line MATCHES "^[0-9a-fA-F]+ ([A-Za-z]) (.*)$")
    continue()
  endif()
  set(_type "${CMAKE_MATCH_1}")
  set(_name "${CMAKE_MATCH_2}")
  if(_type STREQUAL "A")
    continue()
  endif()
  math(EXPR _total "${_total} + 1")
  set(_owner "${_name}")
  foreach(_prefix "typeinfo for " "typeinfo name for " "vtable for " "VTT for "
                  "construction vtable for " "guard variable for " "TLS init function for "
                  "TLS wrapper function for " "non-virtual thunk to " "virtual thunk to "
                  "covariant return thunk to ")
    string(LENGTH "${_prefix}" _plen)
    string(SUBSTRING "${_owner}" 0 ${_plen} _head)
    if(_head STREQUAL _prefix)
      string(SUBSTRING "${_owner}" ${_plen} -1 _owner)
    endif()
  endforeach()
  # A function's return type comes first in the demangled name of a template instantiation
  # ("std::string ferry::f<int>()"); ferry's own exports are not templates, so the name must
  # start with ferry::.
  if(NOT _owner MATCHES "^ferry::")
    list(APPEND _problems "exported outside namespace ferry: ${_name}")
    continue()
  endif()
  if(NOT _owner MATCHES "^ferry::detail::")
    continue()
  endif()
  math(EXPR _detail "${_detail} + 1")
  set(_covered FALSE)
  foreach(_entry IN LISTS _entries)
    # The entry must end a name: "ferry::detail::reap" covers reap(int) and a class entry its
    # members ("::"), but not reap_all(). Entries hold only [A-Za-z0-9_:], safe in a regex.
    if(_owner MATCHES "^${_entry}([(:[< ]|$)")
      set(_covered TRUE)
      list(APPEND _used "${_entry}")
      break()
    endif()
  endforeach()
  if(NOT _covered)
    list(APPEND _problems "ferry::detail symbol not in the documented list: ${_name}")
  endif()
endforeach()

foreach(_entry IN LISTS _entries)
  if(NOT _entry IN_LIST _used)
    list(APPEND _problems "documented but not exported (remove it from the list): ${_entry}")
  endif()
endforeach()

if(_problems)
  list(JOIN _problems "\n  " _text)
  message(FATAL_ERROR "${LIB} exports do not match ${DOC} \"What libferry exports\":\n  ${_text}")
endif()
message(STATUS "libferry exports ${_total} symbols: ${_detail} of them in ferry::detail, "
               "covered by the ${_entry_count} documented entries")
