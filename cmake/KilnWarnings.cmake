# Warning flags for Kiln's own code (not generated protobuf code).
set(KILN_WARNING_FLAGS
    -Wall -Wextra -Wformat=2 -Wshadow -Wpointer-arith -Wstrict-prototypes
    -Wmissing-prototypes -Wvla -Wno-unused-parameter -Wno-missing-field-initializers)
if(KILN_WERROR)
  list(APPEND KILN_WARNING_FLAGS -Werror)
endif()

# kiln_target_warnings(target): apply the warning set to one target.
function(kiln_target_warnings target)
  target_compile_options(${target} PRIVATE ${KILN_WARNING_FLAGS})
endfunction()

add_compile_definitions(_GNU_SOURCE)
add_compile_options(-fno-strict-aliasing -D_FORTIFY_SOURCE=2)
