# kiln_add_test(NAME name SOURCES ... [LIBS ...] [LABELS ...] [ARGS ...] [TIMEOUT s])
# Builds one test binary and registers it with ctest under the given labels.
function(kiln_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ARGS;ENV" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  kiln_target_warnings(${T_NAME})
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests/unit)
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS})
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
                       SKIP_RETURN_CODE 77 ENVIRONMENT "${T_ENV}")
endfunction()

# kiln_add_fuzz(NAME name SOURCES ... LIBS ... CORPUS dir)
# Always: the entry point linked with a corpus driver and run over CORPUS as a
# ctest (label fuzz).  With KILN_FUZZ: also a libFuzzer binary (built by the
# target `fuzzers`) and a ctest (label libfuzzer) fuzzing it for
# KILN_FUZZ_SECONDS from CORPUS; new inputs go to <build>/<name>.corpus (the
# source corpus stays read-only), a crash, leak or timeout fails the test and
# leaves its input as <build>/<name>-crash-... (or -leak-, -timeout-).
set(KILN_FUZZ_SECONDS 60 CACHE STRING "Seconds each libFuzzer ctest (label libfuzzer) runs")
if(KILN_FUZZ AND NOT TARGET fuzzers)
  add_custom_target(fuzzers)
endif()
function(kiln_add_fuzz)
  cmake_parse_arguments(F "" "NAME;CORPUS" "SOURCES;LIBS" ${ARGN})
  add_executable(${F_NAME}_corpus ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/driver.c)
  kiln_target_warnings(${F_NAME}_corpus)
  target_link_libraries(${F_NAME}_corpus PRIVATE ${F_LIBS})
  add_test(NAME ${F_NAME}_corpus COMMAND ${F_NAME}_corpus ${F_CORPUS})
  set_tests_properties(${F_NAME}_corpus PROPERTIES LABELS "fuzz" TIMEOUT 300)
  if(KILN_FUZZ)
    add_executable(${F_NAME} ${F_SOURCES})
    target_compile_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
    target_link_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${F_NAME} PRIVATE ${F_LIBS})
    add_dependencies(fuzzers ${F_NAME})
    set(_new ${CMAKE_CURRENT_BINARY_DIR}/${F_NAME}.corpus)
    file(MAKE_DIRECTORY ${_new})
    add_test(NAME ${F_NAME}_libfuzzer
             COMMAND ${F_NAME} -max_total_time=${KILN_FUZZ_SECONDS} -timeout=10 -rss_limit_mb=2048
                     -print_final_stats=1 -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/${F_NAME}-
                     ${_new} ${F_CORPUS})
    math(EXPR _limit "${KILN_FUZZ_SECONDS} + 120")
    set_tests_properties(${F_NAME}_libfuzzer PROPERTIES LABELS "libfuzzer" TIMEOUT ${_limit})
  endif()
endfunction()
