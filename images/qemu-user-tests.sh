#!/usr/bin/env bash
# Optional: the agent's own test suite (cargo test) built for aarch64 musl
# and run under qemu-user (qemu-aarch64), so unit and integration tests
# exercise the ARM code generation and the musl target.
#
#   images/qemu-user-tests.sh [--target aarch64|armv7] [--binfmt] [--strict]
#                             [-- CARGO TEST ARGS...]
#
# Only the agent's part is built (--no-default-features: no server), as
# in cross/build.sh. Cargo runs each test binary under qemu-user (the
# target's RUNNER); /bin/sh and the hook scripts are the host's.
#
# Tests that execute the agent binary themselves (tests/deploy_local.rs,
# tests/crash_kill.rs ...) need the kernel to run an ARM executable, i.e.
# a binfmt_misc handler for qemu (Debian's qemu-user-binfmt). With
# --binfmt, when the machine has none, this script mounts binfmt_misc
# (needs root) and registers one for the target's ELF machine
# ("edgedeploy-qemu-<arch>", interpreter qemu-user, flag F), and removes it
# on exit. Without a handler those tests fail with "Exec format error":
# reported as such, and not failing this script unless --strict.
# Prints cargo's output, one "test result:" line per test binary, then one
# summary line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cross/lib.sh
. "$repo/cross/lib.sh"

target=aarch64-unknown-linux-musl
strict=0
want_binfmt=0
while [ $# -gt 0 ]; do
    case $1 in
    --strict) strict=1; shift ;;
    --binfmt) want_binfmt=1; shift ;;
    --target)
        case $2 in
        aarch64 | aarch64-unknown-linux-musl) target=aarch64-unknown-linux-musl ;;
        armv7 | armv7-unknown-linux-musleabihf) target=armv7-unknown-linux-musleabihf ;;
        *) die "unsupported target $2 (aarch64, armv7)" ;;
        esac
        shift 2
        ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
    esac
done

apt_ensure qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf file
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
extra=()
case $target in
aarch64-unknown-linux-musl)
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    runner=$(command -v qemu-aarch64-static || command -v qemu-aarch64)
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="$runner -cpu cortex-a53"
    export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
    ;;
armv7-unknown-linux-musleabihf)
    # Same toolchain as cross/build.sh (build-std, Debian's armhf musl).
    "$repo/cross/build.sh" --targets armv7 --variants notls --no-install >/dev/null
    cc=$(ls "$EDGEDEPLOY_CACHE"/sysroot/musl-dev_*_armhf/arm-linux-musleabihf-gcc | head -n 1)
    runner=$(command -v qemu-arm-static || command -v qemu-arm)
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER=$cc
    export CC_armv7_unknown_linux_musleabihf=$cc
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no"
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUNNER="$runner -cpu cortex-a7"
    export RUSTC_BOOTSTRAP=1
    extra=(-Zbuild-std=std,panic_unwind)
    ;;
esac
[ -n "$runner" ] || die "no qemu-user binary"
case $target in
aarch64-*) elf=aarch64 magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' ;;
*) elf=arm magic='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00' ;;
esac
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
binfmt_dir=/proc/sys/fs/binfmt_misc
binfmt=no
registered=""
for f in "$binfmt_dir/qemu-$elf" "$binfmt_dir/edgedeploy-qemu-$elf"; do
    [ -e "$f" ] && binfmt=yes
done
if [ "$binfmt" = no ] && [ "$want_binfmt" = 1 ]; then
    [ -e "$binfmt_dir/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt_dir" ||
        die "cannot mount binfmt_misc on $binfmt_dir (needs root and a kernel with binfmt_misc)"
    # flag F: the kernel opens the interpreter now (also valid in other mount namespaces).
    echo ":edgedeploy-qemu-$elf:M::$magic:$mask:$(command -v "qemu-$elf-static" || command -v "qemu-$elf"):F" >"$binfmt_dir/register" ||
        die "cannot register a binfmt_misc handler for $elf"
    registered=$binfmt_dir/edgedeploy-qemu-$elf
    binfmt="yes (registered $registered for this run)"
fi
log "cargo test --target $target --no-default-features --no-fail-fast (runner: $runner; binfmt_misc handler: $binfmt)"
cd "$repo"
out=$(mktemp)
trap 'rm -f "$out"; [ -z "$registered" ] || echo -1 >"$registered"' EXIT
set +e
cargo test --target "$target" --no-default-features --no-fail-fast "${extra[@]}" "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    END { print p + 0, f + 0 }' "$out")
noexec=$(grep -c 'Exec format error' "$out" || true)
echo
echo "per test binary (under qemu-user):"
awk '/Running (unittests |tests\/)/ { sub(/^ *Running /, ""); sub(/ \(.*/, ""); name = $0 }
    /^ *Doc-tests / { name = "doc-tests" }
    /^test result:/ { sub(/; finished in.*/, ""); printf "  %-28s %s\n", name, $0 }' "$out"
echo "qemu-user tests ($target): $passed passed, $failed failed"
if [ "$status" -ne 0 ] && [ "$binfmt" = no ] && [ "$failed" -gt 0 ] && [ "$noexec" -ge "$failed" ] && [ "$strict" = 0 ]; then
    echo "(all $failed failures are \"Exec format error\": those tests execute the ARM agent binary, which needs a binfmt_misc handler for qemu; not counted)"
    exit 0
fi
exit "$status"
