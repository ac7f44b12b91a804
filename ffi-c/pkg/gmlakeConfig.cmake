# find_package(gmlake CONFIG) for an installed gmlake (scripts/install.sh): imported targets
# gmlake::gmlake (static library) and gmlake::gmlake_shared, with include directories and link
# dependencies. No cargo needed.
get_filename_component(_gmlake_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
include(CMakeFindDependencyMacro)
find_dependency(Threads)
if(NOT TARGET gmlake::gmlake)
  add_library(gmlake::gmlake STATIC IMPORTED)
  set_target_properties(gmlake::gmlake PROPERTIES
    IMPORTED_LOCATION "${_gmlake_prefix}/lib/libgmlake.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_gmlake_prefix}/include"
    INTERFACE_LINK_LIBRARIES "stdc++;Threads::Threads;${CMAKE_DL_LIBS};m")
endif()
if(NOT TARGET gmlake::gmlake_shared AND EXISTS "${_gmlake_prefix}/lib/libgmlake.so")
  add_library(gmlake::gmlake_shared SHARED IMPORTED)
  set_target_properties(gmlake::gmlake_shared PROPERTIES
    IMPORTED_LOCATION "${_gmlake_prefix}/lib/libgmlake.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_gmlake_prefix}/include")
endif()
if(NOT TARGET gmlake::gmlake_cpp AND EXISTS "${_gmlake_prefix}/lib/libgmlake_cpp.a")
  add_library(gmlake::gmlake_cpp STATIC IMPORTED)
  set_target_properties(gmlake::gmlake_cpp PROPERTIES
    IMPORTED_LOCATION "${_gmlake_prefix}/lib/libgmlake_cpp.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_gmlake_prefix}/include"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
endif()
set(gmlake_FOUND TRUE)
