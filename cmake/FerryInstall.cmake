# SPDX-License-Identifier: BSD-3-Clause
# Installation: headers, libferry, ferry-worker, the ferry command, the CMake package
# (find_package(ferry) → ferry::core, ferry::plugin, ferry_add_plugin; COMPONENTS mpi →
# ferry::mpi) and ferry.pc.
include(CMakePackageConfigHelpers)

# Directories the install creates are 0755 whatever the installer's umask: they followed it, so
# that under 002 or 000 bin/, lib/ and include/ were group- or world-writable (another user could
# replace ferry-worker or libferry, and the trust check refused ferry's own files), and under 077
# (root's on some systems) they and the prefix were 0700, so that no other user could use the
# install. CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS alone does not do it: CMake passes it to
# mkdir, which takes the umask away from it. So the first rule of each component makes the
# directories its files go to, every missing one on their way (the prefix, and above it, included;
# under DESTDIR too, where a package takes their modes from), and sets each it made to 0755. One
# that was there before is left as it is (a prefix of /usr/local must not change /usr/local/lib),
# but ferry's own (lib/cmake/ferry, libexec/ferry, share/ferry...), which an earlier install under
# another umask may have left otherwise, are set to 0755 too. (install(DIRECTORY) sets the
# directories it copies itself: include/ferry/detail.) A new install destination goes in the lists
# below: tests/packaging/install_test.sh installs under umask 077 and names any directory not 0755;
# the default permissions stay for one forgotten there (right under the usual umask 022 at least).
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
  OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
set(FERRY_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/ferry)
#   _ferry_install_directories(<component> SHARED <dir>... OWN <dir>...)
# <dir>: relative to the prefix, or absolute, as install(DESTINATION) takes it. Call it before any
# other install rule of the component: rules run in the order they were made.
function(_ferry_install_directories component)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SHARED;OWN")
  set(code "")
  foreach(kind IN ITEMS SHARED OWN)
    string(APPEND code "set(_ferry_${kind}")
    foreach(dir IN LISTS arg_${kind})
      string(APPEND code " [==[${dir}]==]")
    endforeach()
    string(APPEND code ")\n")
  endforeach()
  string(APPEND code [[
set(_ferry_0755 OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
set(_ferry_own_full "")
foreach(_ferry_kind IN ITEMS SHARED OWN)
  foreach(_ferry_dir IN LISTS _ferry_${_ferry_kind})
    if(NOT IS_ABSOLUTE "${_ferry_dir}")
      set(_ferry_dir "${CMAKE_INSTALL_PREFIX}/${_ferry_dir}")
    endif()
    # Where file(INSTALL) puts it: DESTDIR in front; a relative one is from the current directory,
    # which is CMAKE_CURRENT_SOURCE_DIR here. Not made canonical: '..' after a symbolic link is
    # where the link leads, as for mkdir.
    set(_ferry_dir "$ENV{DESTDIR}${_ferry_dir}")
    if(NOT IS_ABSOLUTE "${_ferry_dir}")
      set(_ferry_dir "${CMAKE_CURRENT_SOURCE_DIR}/${_ferry_dir}")
    endif()
    if(_ferry_kind STREQUAL "OWN")
      list(APPEND _ferry_own_full "${_ferry_dir}")
    endif()
    # The missing directories on its way, outermost first.
    set(_ferry_missing "")
    set(_ferry_at "${_ferry_dir}")
    while(NOT EXISTS "${_ferry_at}" AND NOT IS_SYMLINK "${_ferry_at}")
      list(PREPEND _ferry_missing "${_ferry_at}")
      get_filename_component(_ferry_up "${_ferry_at}" DIRECTORY)
      if(_ferry_up STREQUAL _ferry_at OR _ferry_up STREQUAL "")
        break()
      endif()
      set(_ferry_at "${_ferry_up}")
    endwhile()
    foreach(_ferry_at IN LISTS _ferry_missing)
      # Looked at again just before: only what this install makes is set.
      if(NOT EXISTS "${_ferry_at}" AND NOT IS_SYMLINK "${_ferry_at}")
        file(MAKE_DIRECTORY "${_ferry_at}")
        file(CHMOD "${_ferry_at}" DIRECTORY_PERMISSIONS ${_ferry_0755})
      endif()
    endforeach()
  endforeach()
endforeach()
foreach(_ferry_dir IN LISTS _ferry_own_full)
  if(IS_DIRECTORY "${_ferry_dir}" AND NOT IS_SYMLINK "${_ferry_dir}")
    file(CHMOD "${_ferry_dir}" DIRECTORY_PERMISSIONS ${_ferry_0755})
  endif()
endforeach()
]])
  install(CODE "${code}" COMPONENT ${component})
endfunction()
_ferry_install_directories(runtime
  SHARED ${CMAKE_INSTALL_BINDIR} ${CMAKE_INSTALL_LIBDIR}
  OWN ${CMAKE_INSTALL_LIBEXECDIR}/ferry ${CMAKE_INSTALL_DATADIR}/ferry
      ${CMAKE_INSTALL_DATADIR}/ferry/wrap-prelude)
_ferry_install_directories(devel
  SHARED ${CMAKE_INSTALL_INCLUDEDIR} ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  OWN ${CMAKE_INSTALL_INCLUDEDIR}/ferry ${FERRY_INSTALL_CMAKEDIR})

# Installed executables find libferry next to them, without LD_LIBRARY_PATH. The build tree has
# the same layout (bin/, lib/, libexec/ferry/), so each is built with its install RUNPATH already:
# a build RUNPATH that CMake rewrites at install ends in ':' (room for the rewrite), an empty
# element glibc reads as the current directory, and a build-tree ferry-worker started in a
# directory another user can write loaded libstdc++.so.6 from there
# (tests/packaging/runpath_check.sh checks both trees).
file(RELATIVE_PATH _ferry_bin_to_lib
  ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR} ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR})
file(RELATIVE_PATH _ferry_libexec_to_lib
  ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBEXECDIR}/ferry ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR})
set_target_properties(ferry_worker PROPERTIES INSTALL_RPATH "$ORIGIN/${_ferry_bin_to_lib}"
  BUILD_WITH_INSTALL_RPATH ON)
set_target_properties(ferry_wrap_prelude PROPERTIES INSTALL_RPATH "$ORIGIN/${_ferry_libexec_to_lib}"
  BUILD_WITH_INSTALL_RPATH ON
  RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/${CMAKE_INSTALL_LIBEXECDIR}/ferry)
# Where an older build tree had it, with the build RUNPATH that ends in ':'.
file(REMOVE ${PROJECT_BINARY_DIR}/${CMAKE_INSTALL_BINDIR}/ferry_wrap_prelude)
set_target_properties(ferry_core PROPERTIES EXPORT_NAME core)
set_target_properties(ferry_plugin_api PROPERTIES EXPORT_NAME plugin)

install(DIRECTORY core/include/ferry DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT devel)
install(TARGETS ferry_core ferry_plugin_api EXPORT ferryTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS ferry_worker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(TARGETS ferry_wrap_prelude RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/ferry COMPONENT runtime)
if(TARGET ferry_cli)
  set_target_properties(ferry_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${_ferry_bin_to_lib}"
    BUILD_WITH_INSTALL_RPATH ON)
  install(TARGETS ferry_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
endif()

# The MPI backend (FERRY_WITH_MPI): libferry-mpi, its header and the node agent, in an export set
# of its own, so that find_package(ferry COMPONENTS mpi) says whether this install has it.
if(TARGET ferry_mpi)
  # And Open MPI's own library directory (absolute, as linked), wherever it is installed.
  set_target_properties(ferry_mpi_worker PROPERTIES INSTALL_RPATH "$ORIGIN/${_ferry_bin_to_lib}"
    INSTALL_RPATH_USE_LINK_PATH ON BUILD_WITH_INSTALL_RPATH ON)
  set_target_properties(ferry_mpi PROPERTIES INSTALL_RPATH "$ORIGIN" INSTALL_RPATH_USE_LINK_PATH ON
    BUILD_WITH_INSTALL_RPATH ON)
  install(DIRECTORY mpi/include/ferry DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT devel)
  install(TARGETS ferry_mpi EXPORT ferryMpiTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(TARGETS ferry_mpi_worker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
  install(EXPORT ferryMpiTargets NAMESPACE ferry:: DESTINATION ${FERRY_INSTALL_CMAKEDIR} COMPONENT devel)
endif()

install(EXPORT ferryTargets NAMESPACE ferry:: DESTINATION ${FERRY_INSTALL_CMAKEDIR} COMPONENT devel)
configure_package_config_file(cmake/ferryConfig.cmake.in
  ${PROJECT_BINARY_DIR}/ferryConfig.cmake INSTALL_DESTINATION ${FERRY_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ferryConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ferryConfig.cmake ${PROJECT_BINARY_DIR}/ferryConfigVersion.cmake
  cmake/FerryPlugin.cmake DESTINATION ${FERRY_INSTALL_CMAKEDIR} COMPONENT devel)

# Relocatable: the prefix is found from the .pc file's own place (install --prefix may differ).
file(RELATIVE_PATH FERRY_PC_TO_PREFIX
  ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
configure_file(cmake/ferry.pc.in ${PROJECT_BINARY_DIR}/ferry.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/ferry.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT devel)

# The FERRY_WRAP prelude, precompiled for the installed headers, so that no user pays for it.
# Its directory was made by the runtime component's first rule, 0755 (ferry_wrap_prelude would
# make it following the umask).
install(CODE "
  if(NOT \"\$ENV{DESTDIR}\" STREQUAL \"\")
    message(STATUS \"DESTDIR set: the FERRY_WRAP prelude is not precompiled (each user's wrap cache makes its own); \"
                   \"once installed, run ${CMAKE_INSTALL_LIBEXECDIR}/ferry/ferry_wrap_prelude ${CMAKE_INSTALL_DATADIR}/ferry/wrap-prelude \"
                   \"from the prefix to make it for every user\")
  else()
    message(STATUS \"Precompiling the FERRY_WRAP prelude\")
    execute_process(
      COMMAND \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBEXECDIR}/ferry/ferry_wrap_prelude\"
              \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATADIR}/ferry/wrap-prelude\"
      RESULT_VARIABLE _rc OUTPUT_VARIABLE _header)
    # It prints the precompiled header's path, and nothing when it could not make one (it said why
    # on stderr, one line among the install's).
    if(NOT _rc EQUAL 0 OR _header STREQUAL \"\")
      message(WARNING \"The FERRY_WRAP prelude was not precompiled (see the line above): each \"
                      \"user's wrap cache will make its own on its first wrap. Once the cause is \"
                      \"fixed, run ${CMAKE_INSTALL_LIBEXECDIR}/ferry/ferry_wrap_prelude \"
                      \"${CMAKE_INSTALL_DATADIR}/ferry/wrap-prelude from the prefix.\")
    endif()
  endif()" COMPONENT runtime)
