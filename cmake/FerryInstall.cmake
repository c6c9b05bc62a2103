# SPDX-License-Identifier: BSD-3-Clause
# Installation: headers, libferry, ferry-worker, the ferry command, the CMake package
# (find_package(ferry) → ferry::core, ferry::plugin, ferry_add_plugin; COMPONENTS mpi →
# ferry::mpi) and ferry.pc.
include(CMakePackageConfigHelpers)

set(FERRY_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/ferry)

# Directories the install creates are 0755 whatever the installer's umask: they followed it, so
# that under 002 or 000 bin/, lib/ and include/ were group- or world-writable (another user could
# replace ferry-worker or libferry, and the trust check refused ferry's own files).
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
  OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

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
# Its directory is made here, with the permissions above (ferry_wrap_prelude would make it
# following the umask).
install(DIRECTORY DESTINATION ${CMAKE_INSTALL_DATADIR}/ferry/wrap-prelude COMPONENT runtime)
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
