# shellcheck shell=bash
# scripts/common.sh - what setup.sh, test.sh and .ci/run share: the Debian
# packages diskforge needs, installing the missing ones, and the CMake build.
# Sourced, never run.

DF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian 12 packages: the build (compiler, CMake, pkg-config, the -dev
# libraries of SPEC §1), the tests (Check, qemu-utils as the oracle, python3
# for the interop helpers, jsonschema for report validation, gdisk and fdisk
# to read partition tables back), what the filesystem and files ops run
# (e2fsprogs, dosfstools, mtools; SPEC §9), libsqlite3-dev for the run
# state store, and slurm-wlm and munge for the Slurm tests (SPEC §7; they
# start a private single-node cluster, tests/slurm-cluster.sh).
DF_PACKAGES=(build-essential cmake pkg-config libyaml-dev zlib1g-dev
    libzstd-dev libjansson-dev libssl-dev check qemu-utils python3
    python3-jsonschema e2fsprogs dosfstools mtools gdisk fdisk libsqlite3-dev
    strace slurm-wlm munge)

df_say() { printf '\n==> %s\n' "$*"; }

# df_missing_packages: print the packages of DF_PACKAGES not installed.
df_missing_packages() {
    local p
    for p in "${DF_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
            grep -q 'install ok installed' || echo "$p"
    done
}

# df_install_packages: apt-get install what is missing, when we are root on
# a Debian-like system; otherwise say what to install and go on (the build
# then names what it cannot find).
df_install_packages() {
    local missing
    if ! command -v dpkg-query >/dev/null 2>&1; then
        df_say "not a Debian system: install the equivalents of: ${DF_PACKAGES[*]}"
        return 0
    fi
    mapfile -t missing < <(df_missing_packages)
    if ((${#missing[@]} == 0)); then
        df_say "packages: all present"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        df_say "missing packages (run as root: apt-get install ${missing[*]})"
        return 0
    fi
    df_say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
}

# df_build DIR [CMAKE_ARGS...]: configure and build DIR (both incremental).
df_build() {
    local dir=$1
    shift
    df_say "building $dir"
    cmake -S "$DF_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)"
}
