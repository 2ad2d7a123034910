#!/usr/bin/env bash
# Packaging checks, one step per call (tests/c/run.sh counts each):
#   package.sh install   PREFIX       scripts/install.sh --debug PREFIX
#   package.sh cmake     PREFIX WORK  the README's C example with find_package(datasync)
#   package.sh pkgconfig PREFIX WORK  the same with pkg-config --cflags --libs datasync
# The example is taken from README.md ("A minimal program"), so the README cannot
# show a program that does not build. Each built program runs and must print its
# lines.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
step="$1"
prefix="$2"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)"

# The first ```c block after the heading "### A minimal program".
extract_example() {
    awk '/^### A minimal program/ { found = 1; next }
         found && /^```c$/ { inside = 1; next }
         inside && /^```$/ { exit }
         inside { print }' "$root/README.md" > "$1"
    [ -s "$1" ] || { echo "no C example found in README.md" >&2; return 1; }
}

# Runs a built example and checks what the README promises it prints.
check_run() {
    local out
    out="$("$1")" || { echo "$1 failed: $out" >&2; return 1; }
    echo "$out"
    grep -q '^saved User\.' <<< "$out" || { echo "$1: no 'saved User.' line" >&2; return 1; }
    grep -q '^query: \[{' <<< "$out" || { echo "$1: no query line" >&2; return 1; }
    grep -q '^users now: \[{.*"name":"Alice"' <<< "$out" || { echo "$1: the observer did not see Alice" >&2; return 1; }
}

case "$step" in
    install)
        rm -rf "$prefix"
        bash "$root/scripts/install.sh" --debug "$prefix"
        for f in include/datasync.h lib/libdatasync.a lib/pkgconfig/datasync.pc \
                 lib/cmake/datasync/datasyncConfig.cmake lib/cmake/datasync/datasyncConfigVersion.cmake; do
            [ -f "$prefix/$f" ] || { echo "missing $prefix/$f" >&2; exit 1; }
        done
        [ -f "$prefix/lib/libdatasync.so" ] || [ -f "$prefix/lib/libdatasync.dylib" ] \
            || { echo "missing the shared library" >&2; exit 1; }
        ;;
    cmake)
        work="$3"
        rm -rf "$work"
        mkdir -p "$work"
        extract_example "$work/example.c"
        cmake -S "$here/../cmake" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" \
            -DDATASYNC_VERSION="$version" -DEXAMPLE="$work/example.c" \
            -DCMAKE_C_FLAGS="-Wall -Wextra -Werror"
        cmake --build "$work/build"
        check_run "$work/build/example_shared"
        check_run "$work/build/example_static"
        # While the version is 0.x, another minor version is refused.
        mkdir -p "$work/wrong"
        printf 'cmake_minimum_required(VERSION 3.16)\nproject(wrong C)\nfind_package(datasync 0.0 REQUIRED CONFIG)\n' \
            > "$work/wrong/CMakeLists.txt"
        if cmake -S "$work/wrong" -B "$work/wrong/build" -DCMAKE_PREFIX_PATH="$prefix" > "$work/wrong.log" 2>&1; then
            echo "find_package(datasync 0.0) accepted version $version" >&2
            exit 1
        fi
        grep -q "compatible with requested version \"0.0\"" "$work/wrong.log"
        ;;
    pkgconfig)
        work="$3"
        rm -rf "$work"
        mkdir -p "$work"
        extract_example "$work/example.c"
        export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
        pkg-config --exists datasync
        # shellcheck disable=SC2046 # pkg-config output is meant to be split
        ${CC:-cc} -std=c11 -Wall -Wextra -Werror "$work/example.c" -o "$work/example_shared" \
            $(pkg-config --cflags --libs datasync) -Wl,-rpath,"$prefix/lib"
        check_run "$work/example_shared"
        # shellcheck disable=SC2046
        ${CC:-cc} -std=c11 -Wall -Wextra -Werror "$work/example.c" -o "$work/example_static" \
            $(pkg-config --cflags datasync) "$prefix/lib/libdatasync.a" \
            $(pkg-config --static --libs-only-other --libs-only-l datasync | sed 's/-ldatasync//')
        check_run "$work/example_static"
        ;;
    *)
        echo "unknown step $step" >&2
        exit 2
        ;;
esac
