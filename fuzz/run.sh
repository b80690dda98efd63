#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS_PER_TARGET seconds
# (default 60), one after the other; prints the CPU time and the number of
# executions of each, and fails when any target found a crash (the input is
# kept in fuzz/artifacts/<target>/). Installs cargo-fuzz when it is missing.
# docs/fuzzing.md describes the targets and the corpora.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#   FUZZ_ARGS="-max_len=1048576" fuzz/run.sh 300 appspec   # more libFuzzer options
#
# libFuzzer needs nightly compiler flags: on a stable toolchain they are
# enabled with RUSTC_BOOTSTRAP=1. The seeds in fuzz/corpus/<target>/ are
# read only; what the fuzzer adds goes to fuzz/target/corpus/<target>/,
# which is kept between runs on the same machine but is not committed.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
case "$seconds" in
    '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

export RUSTC_BOOTSTRAP=1
# The fuzz package has its own target directory, whatever the main crate uses.
unset CARGO_TARGET_DIR
build_dir=fuzz/target
bin_dir=$build_dir/x86_64-unknown-linux-gnu/release

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "--- installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
if ! command -v c++ >/dev/null 2>&1; then
    # libfuzzer-sys compiles libFuzzer (C++).
    echo "c++ is missing: install g++ (Debian: apt-get install g++)" >&2
    exit 1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "--- building ${targets[*]}"
build_start=$(date +%s)
# No sanitizer: the crate is safe Rust apart from src/sys.rs, and the
# fuzzer looks for panics, overflows (debug assertions are on), hangs and
# memory growth. See docs/fuzzing.md for running with AddressSanitizer.
cargo fuzz build --sanitizer none --release --debug-assertions
echo "built in $(($(date +%s) - build_start)) s"

# Where the bundle targets unpack (in memory when /dev/shm exists), one
# directory per target, removed after it whatever happened.
scratch_parent=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch_parent=/dev/shm
scratch=""
remove_scratch() {
    if [ -n "$scratch" ] && [ -d "$scratch" ]; then
        chmod -R u+rwx "$scratch" 2>/dev/null || true
        rm -rf "$scratch"
    fi
}
trap remove_scratch EXIT

failed=()
summary=()
for target in "${targets[@]}"; do
    work=$build_dir/corpus/$target
    artifacts=fuzz/artifacts/$target
    mkdir -p "$work" "$artifacts" "fuzz/corpus/$target"
    log=$build_dir/$target.log
    echo "--- $target: ${seconds} s"
    status=0
    TIMEFORMAT="%U %S %R"
    # The first directory receives new inputs; the committed seeds are only read.
    scratch=$(mktemp -d "$scratch_parent/edgedeploy-fuzz.XXXXXX")
    { time EDGEDEPLOY_FUZZ_SCRATCH=$scratch "$bin_dir/$target" "$work" "fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?; } 2>"$build_dir/$target.time"
    remove_scratch
    read -r user sys real <"$build_dir/$target.time"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    line=$(awk -v t="$target" -v u="$user" -v s="$sys" -v r="$real" -v e="${execs:-?}" -v p="${peak:-?}" \
        -v c="$(find "$work" -type f | wc -l)" \
        'BEGIN { printf "%-8s cpu %6.1f s (user %.1f, sys %.1f)  wall %5.1f s  executions %9s  corpus %4s  peak rss %s MB", t, u + s, u, s, r, e, c, p }')
    summary+=("$line")
    echo "$line"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "!!! $target failed (exit status $status); the end of its log:"
        tail -n 40 "$log"
        ls -l "$artifacts"
    fi
done

echo "--- summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crash in ${#targets[@]} targets"
