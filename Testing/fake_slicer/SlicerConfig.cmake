# A stand-in for Slicer's SlicerConfig.cmake, so the extension configures without a Slicer build:
#   cmake -S . -B build -DSlicer_DIR=Testing/fake_slicer -DBUILD_TESTING=ON
# Its slicerMacroBuildScriptedModule fails on any listed file that is missing (as packaging would later) and writes
# the listed (and missing) files to <build>/<module>-listed-files.txt (-missing-files.txt) so a test can check that
# nothing shipped is left unlisted.
# The same file serves as Slicer_USE_FILE and the extension config/CPack includes; the guard makes those no-ops.
include_guard(GLOBAL)

set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_FILE})
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_FILE})
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_FILE})

foreach(variable EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION
                 EXTENSION_ICONURL EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  if(NOT DEFINED ${variable} OR "${${variable}}" STREQUAL "")
    message(SEND_ERROR "${variable} must be set before find_package(Slicer)")
  endif()
endforeach()

function(_fake_slicer_check_listed module_name)
  foreach(listed IN LISTS ARGN)
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${listed}")
      message(SEND_ERROR "missing file listed in module ${module_name}: ${listed}")
      file(APPEND "${CMAKE_BINARY_DIR}/${module_name}-missing-files.txt" "${listed}\n")
    endif()
    file(APPEND "${CMAKE_BINARY_DIR}/${module_name}-listed-files.txt" "${listed}\n")
  endforeach()
endfunction()

function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MODULE "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT MODULE_NAME)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: NAME is mandatory")
  endif()
  if(MODULE_UNPARSED_ARGUMENTS)
    message(SEND_ERROR "slicerMacroBuildScriptedModule: unknown arguments ${MODULE_UNPARSED_ARGUMENTS}")
  endif()
  file(REMOVE "${CMAKE_BINARY_DIR}/${MODULE_NAME}-listed-files.txt" "${CMAKE_BINARY_DIR}/${MODULE_NAME}-missing-files.txt")
  _fake_slicer_check_listed(${MODULE_NAME} ${MODULE_SCRIPTS} ${MODULE_RESOURCES})
endfunction()

function(slicer_add_python_unittest)
  cmake_parse_arguments(TEST "" "SCRIPT;SLICER_ARGS;TESTNAME_PREFIX" "" ${ARGN})
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${TEST_SCRIPT}")
    message(SEND_ERROR "slicer_add_python_unittest: missing script ${TEST_SCRIPT}")
  endif()
endfunction()
