#!/usr/bin/env bash
# The whole test suite, from a clean checkout on Debian 12 (as root):
# installs dependencies, runs shellcheck on every shell script, builds with
# warnings as errors, runs every ctest label (unit, integration, privileged,
# fuzz), then the README's commands in a brand-new Debian 12 root
# (tests/fresh-root.sh; as root, and not again inside that root), then the
# same suite built with AddressSanitizer + UndefinedBehaviorSanitizer, the
# unit and integration labels built with ThreadSanitizer, every fuzz target
# under libFuzzer (clang, ASan+UBSan) for $KILN_FUZZ_SECONDS (default 60) each
# from its corpus, then the clang-format check.  CI runs every stage; the
# flags skip one for local use.
#   tests/run.sh [--no-asan] [--no-tsan] [--no-fuzz] [--no-shellcheck] [--no-format]
#                [--no-fresh-root]
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
asan=1 tsan=1 fuzz=1 shellcheck=1 format=1 fresh=1
usage="usage: $0 [--no-asan] [--no-tsan] [--no-fuzz] [--no-shellcheck] [--no-format] [--no-fresh-root]"
for arg in "$@"; do
    case "$arg" in
    --no-asan) asan=0 ;;
    --no-tsan) tsan=0 ;;
    --no-fuzz) fuzz=0 ;;
    --no-shellcheck) shellcheck=0 ;;
    --no-format) format=0 ;;
    --no-fresh-root) fresh=0 ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
done
# Inside the fresh root, the suite runs once: no fresh root within it.
[ "${KILN_FRESH_ROOT:-}" = inside ] && fresh=0
jobs=$(nproc)

deploy/install-deps.sh --test

section() { printf '\n==== %s ====\n' "$*"; }
stage_t0=$SECONDS
timed() { # after a stage: how long it took
    echo "($1: $((SECONDS - stage_t0)) s)"
    stage_t0=$SECONDS
}

# Every shell script: *.sh and the extensionless ones starting with a shell
# shebang (.ci/run).
shell_scripts() {
    local f
    { git ls-files 2>/dev/null || find . -path ./build -prune -o -type f -print; } |
        while read -r f; do
            case "$f" in
            *.sh) echo "$f" ;;
            */*.* | [!/]*.*) ;;
            *) head -n1 "$f" 2>/dev/null | grep -Eq '^#!.*(/|env )(ba|da)?sh\b' && echo "$f" ;;
            esac
        done
}

if [ "$shellcheck" = 1 ]; then
    section "shellcheck"
    mapfile -t scripts < <(shell_scripts)
    shellcheck --severity=warning "${scripts[@]}"
    echo "shellcheck: ${#scripts[@]} scripts clean"
    timed shellcheck
fi

section "build (warnings as errors)"
cmake -S . -B build/ci -DKILN_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/ci -j"$jobs"

section "ctest: unit, integration, privileged, fuzz"
ctest --test-dir build/ci --output-on-failure -j"$jobs"
timed "build and ctest"

if [ "$fresh" = 1 ] && [ "$(id -u)" -eq 0 ]; then
    section "fresh root: the README's commands on a new Debian 12 root"
    rc=0
    tests/fresh-root.sh || rc=$?
    if [ "$rc" = 77 ]; then
        echo "fresh root: skipped (see above)"
    elif [ "$rc" != 0 ]; then
        exit "$rc"
    fi
    timed "fresh root"
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
    timed "ASan+UBSan"
fi

if [ "$tsan" = 1 ]; then
    section "build with ThreadSanitizer"
    cmake -S . -B build/tsan -DKILN_WERROR=ON -DKILN_SANITIZER=thread \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build/tsan -j"$jobs"
    # The unit tests and the integration tests that drive the services'
    # threads from C (RPC workers, job threads, parallel stages, event
    # publishing); the CLI scripts add little to that and much to the time.
    section "ctest under TSan: unit, and integration tests written in C"
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$top/tests/tsan.supp" \
        ctest --test-dir build/tsan --output-on-failure -j"$jobs" -L 'unit|integration' \
        -E '_cli$|^k8s_'
    timed TSan
fi

if [ "$fuzz" = 1 ]; then
    section "libFuzzer: every fuzz target for ${KILN_FUZZ_SECONDS:-60} s from its corpus"
    CC=clang cmake -S . -B build/fuzz -DKILN_WERROR=ON -DKILN_FUZZ=ON \
        -DKILN_SANITIZER=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DKILN_FUZZ_SECONDS="${KILN_FUZZ_SECONDS:-60}" >/dev/null
    cmake --build build/fuzz -j"$jobs" --target fuzzers
    # No strict_string_checks: fuzz inputs are not NUL-terminated, and the
    # targets rightly use the bounded string functions (strndup) on them.
    ASAN_OPTIONS=detect_leaks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build/fuzz --output-on-failure -j"$jobs" -L libfuzzer
    timed libFuzzer
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
