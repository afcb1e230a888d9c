#!/usr/bin/env bash
# fuzz.sh - fuzz the image engine with libFuzzer (clang), under ASan+UBSan.
#
#   scripts/fuzz.sh [--time SECONDS] [--jobs N] [--corpus DIR]
#
# Builds build-fuzz/ with clang and -DDF_FUZZ=ON, seeds the corpus (default
# build-fuzz/corpus) with small images from tests/fuzz/make-seeds.sh
# (needs qemu-img and qemu-io), and runs tests/fuzz/fuzz_image.c for
# SECONDS (default 600) on N processes (default 1).  A crash leaves its
# input as build-fuzz/crash-*; reduce it, fix the bug, and add the input to
# tests/bad/ so that the test suite replays it (see tests/bad/README.md).
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

time=600
jobs=1
corpus=""
while (($#)); do
    case $1 in
    --time) time=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

dir="$DF_ROOT/build-fuzz"
corpus=${corpus:-$dir/corpus}
CC=clang df_build "$dir" -DDF_FUZZ=ON -DDF_SANITIZE=address,undefined \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [[ ! -d $corpus ]] || [[ -z $(ls -A "$corpus") ]]; then
    "$DF_ROOT/tests/fuzz/make-seeds.sh" "$corpus"
fi
cd "$dir"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
par=()
((jobs > 1)) && par=(-jobs="$jobs" -workers="$jobs")
exec "$dir/tests/fuzz_image" -max_total_time="$time" -timeout=20 \
    -rss_limit_mb=4096 -max_len=1048576 "${par[@]}" \
    "$corpus" "$DF_ROOT/tests/bad"
