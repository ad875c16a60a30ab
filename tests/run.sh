#!/usr/bin/env bash
# The whole test suite, from a clean checkout on Debian 12 (as root):
# installs dependencies, builds with warnings as errors, runs every ctest
# label (unit, integration, privileged, fuzz), then the README's commands in a
# brand-new Debian 12 root (tests/fresh-root.sh; as root, and not again inside
# that root), then the same suite built with AddressSanitizer +
# UndefinedBehaviorSanitizer, then the clang-format check.
#   tests/run.sh [--no-asan] [--no-format] [--no-fresh-root]
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
asan=1 format=1 fresh=1
for arg in "$@"; do
    case "$arg" in
    --no-asan) asan=0 ;;
    --no-format) format=0 ;;
    --no-fresh-root) fresh=0 ;;
    *) echo "usage: $0 [--no-asan] [--no-format] [--no-fresh-root]" >&2; exit 2 ;;
    esac
done
# Inside the fresh root, the suite runs once: no fresh root within it.
[ "${KILN_FRESH_ROOT:-}" = inside ] && fresh=0
jobs=$(nproc)

deploy/install-deps.sh --test

section() { printf '\n==== %s ====\n' "$*"; }

section "build (warnings as errors)"
cmake -S . -B build/ci -DKILN_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/ci -j"$jobs"

section "ctest: unit, integration, privileged, fuzz"
ctest --test-dir build/ci --output-on-failure -j"$jobs"

if [ "$fresh" = 1 ] && [ "$(id -u)" -eq 0 ]; then
    section "fresh root: the README's commands on a new Debian 12 root"
    rc=0
    tests/fresh-root.sh || rc=$?
    if [ "$rc" = 77 ]; then
        echo "fresh root: skipped (see above)"
    elif [ "$rc" != 0 ]; then
        exit "$rc"
    fi
fi

if [ "$asan" = 1 ]; then
    section "build with AddressSanitizer + UndefinedBehaviorSanitizer"
    cmake -S . -B build/asan -DKILN_WERROR=ON -DKILN_SANITIZER=address,undefined \
        -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build build/asan -j"$jobs"
    section "ctest under ASan+UBSan"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    LSAN_OPTIONS=suppressions=$top/tests/lsan.supp:print_suppressions=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build/asan --output-on-failure -j"$jobs"
fi

if [ "$format" = 1 ]; then
    section "clang-format"
    cd "$top"
    files=$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build/*')
    # shellcheck disable=SC2086
    clang-format --dry-run --Werror $files
    echo "clang-format: $(echo "$files" | wc -w) files clean"
fi
section "all tests passed"
