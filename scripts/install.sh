#!/usr/bin/env bash
# Installs gmlake for C and C++ users: PREFIX/lib/libgmlake.{a,so} and PREFIX/include/gmlake.h (C),
# PREFIX/lib/libgmlake_cpp.a and PREFIX/include/gmlake/gmlake.hpp with the cxx headers (C++),
# PREFIX/lib/pkgconfig/gmlake.pc (static) and gmlake-shared.pc, PREFIX/lib/cmake/gmlake/ (targets gmlake::gmlake,
# gmlake::gmlake_shared, gmlake::gmlake_cpp).
#   scripts/install.sh PREFIX            # builds the release library with cargo first
#   scripts/install.sh PREFIX --from DIR # takes libgmlake.a/.so already built in DIR (no cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:?usage: scripts/install.sh PREFIX [--from DIR]}
from=""
if [ "${2:-}" = "--from" ]; then from=${3:?--from needs a directory}; fi
if [ -z "$from" ]; then
  cargo build --release --locked -p gmlake-ffi-c -p gmlake-ffi-cpp
  from=target/release
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p "$prefix/lib/pkgconfig" "$prefix/lib/cmake/gmlake" "$prefix/include"
cp "$from/libgmlake.a" "$prefix/lib/"
[ -f "$from/libgmlake.so" ] && cp "$from/libgmlake.so" "$prefix/lib/"
cp ffi-c/include/gmlake.h "$prefix/include/"
# C++: the library and headers, where built (cxx's generated headers are symlinks: copy their targets).
cxxbridge=${CXXBRIDGE_DIR:-$from/../cxxbridge}
if [ -f "$from/libgmlake_cpp.a" ] && [ -d "$cxxbridge" ]; then
  cp "$from/libgmlake_cpp.a" "$prefix/lib/"
  mkdir -p "$prefix/include/gmlake" "$prefix/include/rust" "$prefix/include/gmlake-ffi-cpp/src"
  cp ffi-cpp/include/gmlake/gmlake.hpp "$prefix/include/gmlake/"
  cp -L "$cxxbridge/rust/cxx.h" "$prefix/include/rust/"
  cp -L "$cxxbridge/gmlake-ffi-cpp/src/lib.rs.h" "$prefix/include/gmlake-ffi-cpp/src/"
fi
# gmlake.pc links the static library (a binary that needs nothing at run time); gmlake-shared.pc
# the shared one, with an rpath so that the binary finds it without LD_LIBRARY_PATH.
for pc in gmlake gmlake-shared; do
  sed -e "s|@PREFIX@|$(cd "$prefix" && pwd)|" -e "s|@VERSION@|$version|" "ffi-c/pkg/$pc.pc.in" > "$prefix/lib/pkgconfig/$pc.pc"
done
cp ffi-c/pkg/gmlakeConfig.cmake "$prefix/lib/cmake/gmlake/"
sed -e "s|@VERSION@|$version|" ffi-c/pkg/gmlakeConfigVersion.cmake.in > "$prefix/lib/cmake/gmlake/gmlakeConfigVersion.cmake"
echo "installed gmlake $version into $prefix"
