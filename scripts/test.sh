#!/usr/bin/env bash
# test.sh - the README's second command: build (if needed) and run the whole
# test suite with ctest.
#
#   scripts/test.sh                    build/, every test
#   scripts/test.sh --sanitize         build-asan/ with ASan + UBSan
#   scripts/test.sh -L unit            extra arguments go to ctest
#   scripts/test.sh --sanitize -R interop.bad_input
#
# Packages are installed first when some are missing and we are root (see
# scripts/common.sh); otherwise the list of what is missing is printed.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

sanitize=0
if [[ ${1:-} == --sanitize ]]; then
    sanitize=1
    shift
fi

df_install_packages
if ((sanitize)); then
    dir="$DF_ROOT/build-asan"
    df_build "$dir" -DDF_SANITIZE=address,undefined
    # Any sanitizer report fails the program that made it (and the interop
    # helpers also look for reports on stderr).
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
    # Check's per-test timeouts (CK_DEFAULT_TIMEOUT) are scaled by this.
    export CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-10}
else
    dir="$DF_ROOT/build"
    df_build "$dir"
fi

df_say "ctest in ${dir#"$DF_ROOT"/}"
cd "$dir"
ctest --output-on-failure -j "$(nproc)" "$@"
