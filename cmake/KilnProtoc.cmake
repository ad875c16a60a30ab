# kiln_protoc_c(OUT_SRCS OUT_HDRS proto...): generate protobuf-c sources in the build tree.
find_program(PROTOC_C NAMES protoc-c protoc-gen-c REQUIRED)

function(kiln_protoc_c out_srcs out_hdrs)
  set(_srcs)
  set(_hdrs)
  foreach(_proto IN LISTS ARGN)
    get_filename_component(_abs ${_proto} ABSOLUTE)
    get_filename_component(_name ${_proto} NAME_WE)
    set(_c ${CMAKE_CURRENT_BINARY_DIR}/kiln/${_name}.pb-c.c)
    set(_h ${CMAKE_CURRENT_BINARY_DIR}/kiln/${_name}.pb-c.h)
    add_custom_command(
      OUTPUT ${_c} ${_h}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/kiln
      COMMAND ${PROTOC_C} --proto_path=${CMAKE_CURRENT_SOURCE_DIR}
              --c_out=${CMAKE_CURRENT_BINARY_DIR}/kiln ${_abs}
      DEPENDS ${_abs}
      COMMENT "protoc-c ${_proto}")
    list(APPEND _srcs ${_c})
    list(APPEND _hdrs ${_h})
  endforeach()
  set(${out_srcs} ${_srcs} PARENT_SCOPE)
  set(${out_hdrs} ${_hdrs} PARENT_SCOPE)
endfunction()
