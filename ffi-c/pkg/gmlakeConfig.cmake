# find_package(gmlake CONFIG) for an installed gmlake (scripts/install.sh): imported targets
# gmlake::gmlake (static library) and gmlake::gmlake_shared, with include directories and link
# dependencies. No cargo needed.
get_filename_component(_gmlake_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
include(CMakeFindDependencyMacro)
find_dependency(Threads)
# _gmlake_import(TARGET TYPE FILE LINK_LIBRARIES): an imported library of the installed prefix,
# if its file exists and the target is not defined yet.
function(_gmlake_import target type file libs)
  if(NOT TARGET ${target} AND EXISTS "${_gmlake_prefix}/lib/${file}")
    add_library(${target} ${type} IMPORTED)
    set_target_properties(${target} PROPERTIES
      IMPORTED_LOCATION "${_gmlake_prefix}/lib/${file}"
      INTERFACE_INCLUDE_DIRECTORIES "${_gmlake_prefix}/include"
      INTERFACE_LINK_LIBRARIES "${libs}")
  endif()
endfunction()
_gmlake_import(gmlake::gmlake STATIC libgmlake.a "stdc++;Threads::Threads;${CMAKE_DL_LIBS};m")
_gmlake_import(gmlake::gmlake_shared SHARED libgmlake.so "")
_gmlake_import(gmlake::gmlake_cpp STATIC libgmlake_cpp.a "Threads::Threads;${CMAKE_DL_LIBS};m")
if(TARGET gmlake::gmlake_cpp)
  set_property(TARGET gmlake::gmlake_cpp PROPERTY INTERFACE_COMPILE_FEATURES cxx_std_17)
endif()
set(gmlake_FOUND TRUE)
