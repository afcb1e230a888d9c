#!/usr/bin/env bash
# fuzz.sh - fuzz the image engine or the job reader with libFuzzer
# (clang), under ASan+UBSan.
#
#   scripts/fuzz.sh [--target image|job] [--time SECONDS] [--jobs N] [--corpus DIR]
#
# Builds build-fuzz/ with clang and -DDF_FUZZ=ON, seeds the corpus (default
# build-fuzz/corpus-TARGET) and runs tests/fuzz/fuzz_TARGET.c for SECONDS
# (default 600) on N processes (default 1).  The image target (default)
# starts from small images made by tests/fuzz/make-seeds.sh (needs qemu-img
# and qemu-io); the job target from the job files in jobs/.  A crash leaves its
# input as build-fuzz/crash-*; reduce it, fix the bug, and add the input to
# tests/bad/ so that the test suite replays it (see tests/bad/README.md).
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

target=image
time=600
jobs=1
corpus=""
while (($#)); do
    case $1 in
    --target) target=$2; shift 2 ;;
    --time) time=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

case $target in
image | job) ;;
*) echo "fuzz.sh: unknown target '$target' (image or job)" >&2; exit 2 ;;
esac
dir="$DF_ROOT/build-fuzz"
corpus=${corpus:-$dir/corpus-$target}
CC=clang df_build "$dir" -DDF_FUZZ=ON -DDF_SANITIZE=address,undefined \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [[ ! -d $corpus ]] || [[ -z $(ls -A "$corpus") ]]; then
    if [[ $target == image ]]; then
        "$DF_ROOT/tests/fuzz/make-seeds.sh" "$corpus"
    else
        mkdir -p "$corpus"
        cp "$DF_ROOT"/jobs/*.yaml "$corpus/"
    fi
fi
extra=("$DF_ROOT/tests/bad")
[[ $target == job ]] && extra=()
cd "$dir"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
par=()
((jobs > 1)) && par=(-jobs="$jobs" -workers="$jobs")
exec "$dir/tests/fuzz_$target" -max_total_time="$time" -timeout=20 \
    -rss_limit_mb=4096 -max_len=1048576 "${par[@]}" \
    "$corpus" "${extra[@]}"
