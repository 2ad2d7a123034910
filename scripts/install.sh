#!/usr/bin/env bash
# Builds the library and installs it for C and C++ users under PREFIX:
#   PREFIX/include/datasync.h
#   PREFIX/lib/libdatasync.so (.dylib on macOS) and PREFIX/lib/libdatasync.a
#   PREFIX/lib/pkgconfig/datasync.pc              pkg-config --cflags --libs datasync
#   PREFIX/lib/cmake/datasync/datasyncConfig.cmake (+ ConfigVersion)
#                                                  find_package(datasync): imported
#                                                  targets datasync::datasync (shared)
#                                                  and datasync::static
# Usage: scripts/install.sh [--debug] PREFIX   (--debug installs a debug build)
# Honours CARGO_TARGET_DIR. The CMake files find the prefix relative to themselves;
# datasync.pc names it (`pkg-config --define-prefix` relocates it).
set -euo pipefail

profile=release
if [ "${1:-}" = "--debug" ]; then
    profile=debug
    shift
fi
if [ $# -ne 1 ]; then
    echo "usage: $0 [--debug] PREFIX" >&2
    exit 2
fi
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in
        /*) ;;
        *) CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;;
    esac
    export CARGO_TARGET_DIR
fi
target="${CARGO_TARGET_DIR:-$root/target}"

case "$(uname -s)" in
    Darwin) shared=libdatasync.dylib ;;
    *) shared=libdatasync.so ;;
esac

# One build of every crate type; it also prints the system libraries that the static
# library needs (cargo replays the note when the build is already fresh).
cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)
build_log="$(cd "$root" && cargo rustc "${cargo_profile[@]}" --lib -- --print native-static-libs 2>&1)" || {
    echo "$build_log" >&2
    exit 1
}
native="$(printf '%s\n' "$build_log" | sed -n 's/.*native-static-libs: //p' | tail -1)"
if [ -z "$native" ]; then
    echo "cargo did not print the native static libraries" >&2
    exit 1
fi
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)"

lib="$prefix/lib"
mkdir -p "$prefix/include" "$lib/pkgconfig" "$lib/cmake/datasync"
install -m 644 "$root/include/datasync.h" "$prefix/include/datasync.h"
install -m 755 "$target/$profile/$shared" "$lib/$shared"
install -m 644 "$target/$profile/libdatasync.a" "$lib/libdatasync.a"

cat > "$lib/pkgconfig/datasync.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: datasync
Description: Offline-first, multi-tier, reactive entity store with sync (C ABI)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -ldatasync
Libs.private: $native
PC

# CMake wants library names, not -l flags.
cmake_native="$(printf '%s' "$native" | sed 's/-l//g; s/  */;/g')"
cat > "$lib/cmake/datasync/datasyncConfig.cmake" <<CMAKE
# datasync $version: find_package(datasync) gives the imported targets
# datasync::datasync (the shared library) and datasync::static (the static one).
get_filename_component(_datasync_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT TARGET datasync::datasync)
  add_library(datasync::datasync SHARED IMPORTED)
  set_target_properties(datasync::datasync PROPERTIES
    IMPORTED_LOCATION "\${_datasync_prefix}/lib/$shared"
    # The library carries no soname: link it by name, from its directory.
    IMPORTED_NO_SONAME TRUE
    INTERFACE_INCLUDE_DIRECTORIES "\${_datasync_prefix}/include")
endif()

if(NOT TARGET datasync::static)
  add_library(datasync::static STATIC IMPORTED)
  set_target_properties(datasync::static PROPERTIES
    IMPORTED_LOCATION "\${_datasync_prefix}/lib/libdatasync.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_datasync_prefix}/include"
    INTERFACE_LINK_LIBRARIES "$cmake_native")
endif()

set(datasync_INCLUDE_DIRS "\${_datasync_prefix}/include")
set(datasync_LIBRARIES datasync::datasync)
unset(_datasync_prefix)
CMAKE

cat > "$lib/cmake/datasync/datasyncConfigVersion.cmake" <<CMAKE
# datasync $version. While the major version is 0, a minor release may break the
# API, so 0.x.y is compatible with requests for 0.x.z (z <= y) only.
set(PACKAGE_VERSION "$version")
set(PACKAGE_VERSION_COMPATIBLE FALSE)
set(PACKAGE_VERSION_EXACT FALSE)
if(NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  string(REPLACE "." ";" _datasync_have "\${PACKAGE_VERSION}")
  list(GET _datasync_have 0 _datasync_major)
  list(GET _datasync_have 1 _datasync_minor)
  if(PACKAGE_FIND_VERSION_MAJOR EQUAL _datasync_major AND
     (_datasync_major GREATER 0 OR PACKAGE_FIND_VERSION_MINOR EQUAL _datasync_minor))
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  endif()
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
  unset(_datasync_have)
  unset(_datasync_major)
  unset(_datasync_minor)
endif()
CMAKE

echo "installed datasync $version ($profile) under $prefix"
