#!/usr/bin/env bash
# CI step for ARM builds and device tests (called from .ci/run):
#
#   bash images/ci.sh
#
#  1. installs what it needs (apt, rustup, pip; idempotent; root on Debian 12)
#  2. cross/build.sh: static agents for aarch64 and armv7 (the device
#     images' CPUs), with and without TLS
#  3. images/build.sh arm64 and armhf
#  4. cargo build --bin edgedeploy: the x86_64 server the tests drive
#     (debug profile, as the test suite builds it)
#  5. images/run-tests.sh arm64 and armhf, in parallel (one QEMU guest per
#     core), each against its own server: boot, agent crash, CI_CUTS power
#     cuts each (default 20)
#  6. images/qemu-user-tests.sh --target aarch64 --binfmt --strict: the
#     agent's own test suite built for aarch64 musl and run under qemu-user
#     (with a binfmt_misc handler registered for the run, so the tests that
#     execute the agent binary run the ARM one too)
#  7. cross/build.sh for the other two targets (arm = ARMv6, x86_64) unless
#     CI_CROSS_REST=0
#
# Environment: CI_CUTS (default 20), CI_CROSS_REST (default 1),
# EDGEDEPLOY_CACHE (downloads, default /var/cache/edgedeploy).
# Budget: about 25 minutes on a 2-core machine (docs/devices.md has figures).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cross/lib.sh
. "$repo/cross/lib.sh"
cd "$repo"
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never

T0=$(date +%s)
STEP=""
STEP_T=0
step() {
    end_step
    STEP=$1
    STEP_T=$(date +%s)
    echo
    echo "==> images/ci.sh: $STEP"
}
end_step() {
    [ -n "$STEP" ] && echo "==> images/ci.sh: $STEP ($(($(date +%s) - STEP_T)) s)"
    STEP=""
}
trap 'st=$?; [ "$st" -ne 0 ] && [ -n "$STEP" ] && echo "==> images/ci.sh: FAILED: $STEP (exit status $st)"' EXIT

step "packages"
apt_ensure gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf binutils file \
    gcc libc6-dev musl-tools qemu-system-arm qemu-utils socat e2fsprogs cpio gzip xz-utils python3
echo "qemu: $(qemu-system-aarch64 --version | head -n 1)"

step "cross/build.sh --targets aarch64,armv7"
cross/build.sh --targets aarch64-unknown-linux-musl,armv7-unknown-linux-musleabihf

step "cargo build --bin edgedeploy (the server the device tests drive)"
if ! python3 -c 'import boto3' 2>/dev/null; then
    python3 -m pip install --quiet boto3 || python3 -m pip install --quiet --break-system-packages boto3
fi
cargo build --bin edgedeploy

step "images/build.sh arm64 armhf"
images/build.sh arm64 --no-install
images/build.sh armhf --no-install

step "images/run-tests.sh arm64 + armhf (parallel, ${CI_CUTS:-20} cuts each)"
logs=$(mktemp -d)
pids=()
for a in arm64 armhf; do
    EDGEDEPLOY_SERVER_BIN=${CARGO_TARGET_DIR:-$repo/target}/debug/edgedeploy \
        images/run-tests.sh "$a" --cuts "${CI_CUTS:-20}" --no-build --no-install >"$logs/$a.log" 2>&1 &
    pids+=($!)
done
status=0
results=()
for i in 0 1; do
    a=$([ "$i" = 0 ] && echo arm64 || echo armhf)
    if wait "${pids[$i]}"; then
        results+=("$a: passed")
    else
        results+=("$a: FAILED")
        status=1
    fi
    echo "---- images/run-tests.sh $a"
    grep -v '^\[[0-9:]*\] ' "$logs/$a.log" || true
done
rm -rf "$logs"
printf '%s\n' "${results[@]}"

step "images/qemu-user-tests.sh --target aarch64 (the agent's test suite under qemu-user)"
quser_log=$repo/target/qemu-user-tests.log
if images/qemu-user-tests.sh --target aarch64 --binfmt --strict >"$quser_log" 2>&1; then
    sed -n '/^per test binary/,$p' "$quser_log"
else
    status=1
    tail -n 60 "$quser_log"
fi

if [ "${CI_CROSS_REST:-1}" = 1 ]; then
    step "cross/build.sh --targets arm,x86_64"
    cross/build.sh --targets arm-unknown-linux-musleabihf,x86_64-unknown-linux-musl || status=1
fi

end_step
echo
echo "==> images/ci.sh: $([ "$status" = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - T0)) s"
exit "$status"
