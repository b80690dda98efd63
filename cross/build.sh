#!/usr/bin/env bash
# Docker-free cross build of static edgedeploy-agent binaries.
#
#   cross/build.sh [--targets T1,T2,...|all] [--variants notls,tls] [--no-install]
#
# Targets (default: all four):
#   aarch64-unknown-linux-musl       rustup target, linked by rust-lld
#   armv7-unknown-linux-musleabihf   -Zbuild-std (no rustup std for it here), Debian's
#                                    arm-linux-gnueabihf-gcc + Debian's armhf musl-dev
#                                    (unpacked into the cache, used through a gcc specs file)
#   arm-unknown-linux-musleabihf     ARMv6: -Zbuild-std + cargo-zigbuild (zig builds musl
#                                    for the ARMv6 CPU; Debian's armhf musl is ARMv7 code)
#   x86_64-unknown-linux-musl        rustup target
# Short names: aarch64, armv7, arm (or armv6), x86_64.
#
# Each target is built twice: without default features (no TLS: the agent
# speaks plain http; the device images use this one) and with TLS (the
# agent's `tls` feature alone, not the server's). Output, for each target T:
#   target/cross/T/edgedeploy-agent-notls   --no-default-features
#   target/cross/T/edgedeploy-agent         --no-default-features --features tls
# (CROSS_OUT overrides target/cross; CARGO_TARGET_DIR is honoured.)
#
# Installs what it needs, idempotently (root, Debian 12): apt gcc-aarch64-linux-gnu
# libc6-dev-arm64-cross gcc-arm-linux-gnueabihf file; rustup targets and rust-src; pip ziglang and
# cargo-zigbuild. --no-install skips that. Prints one line per target: the
# `file` verdict and the stripped sizes; exits non-zero when a binary is not
# statically linked or a build fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cross/lib.sh
. "$here/lib.sh"

ALL_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf x86_64-unknown-linux-musl)
targets=("${ALL_TARGETS[@]}")
variants=(notls tls)
install=1

while [ $# -gt 0 ]; do
    case $1 in
    --targets | -t)
        [ $# -ge 2 ] || die "--targets needs a value"
        if [ "$2" = all ]; then
            targets=("${ALL_TARGETS[@]}")
        else
            IFS=, read -r -a targets <<<"$2"
        fi
        shift 2
        ;;
    --targets=*)
        v=${1#--targets=}
        if [ "$v" = all ]; then targets=("${ALL_TARGETS[@]}"); else IFS=, read -r -a targets <<<"$v"; fi
        shift
        ;;
    --variants)
        [ $# -ge 2 ] || die "--variants needs a value"
        IFS=, read -r -a variants <<<"$2"
        shift 2
        ;;
    --no-install) install=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

for i in "${!targets[@]}"; do
    case ${targets[$i]} in
    aarch64 | arm64) targets[$i]=aarch64-unknown-linux-musl ;;
    armv7 | armhf) targets[$i]=armv7-unknown-linux-musleabihf ;;
    arm | armv6) targets[$i]=arm-unknown-linux-musleabihf ;;
    x86_64 | amd64) targets[$i]=x86_64-unknown-linux-musl ;;
    esac
    case " ${ALL_TARGETS[*]} " in
    *" ${targets[$i]} "*) ;;
    *) die "unknown target ${targets[$i]} (one of: ${ALL_TARGETS[*]})" ;;
    esac
done
for v in "${variants[@]}"; do
    case $v in notls | tls) ;; *) die "unknown variant $v (notls, tls)" ;; esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
out_root=${CROSS_OUT:-$repo/target/cross}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

want() { case " ${targets[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ---- toolchain setup (idempotent) ----------------------------------------

if [ "$install" = 1 ]; then
    pkgs=(file binutils)
    # (libc6-dev-arm64-cross: the C headers ring's code needs, a Recommends.)
    want aarch64-unknown-linux-musl && pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
    want armv7-unknown-linux-musleabihf && pkgs+=(gcc-arm-linux-gnueabihf)
    want x86_64-unknown-linux-musl && pkgs+=(gcc libc6-dev musl-tools)
    apt_ensure "${pkgs[@]}"
    installed_targets=$(rustup target list --installed)
    for t in aarch64-unknown-linux-musl x86_64-unknown-linux-musl; do
        if want "$t" && ! grep -qx "$t" <<<"$installed_targets"; then
            rustup target add "$t" >&2
        fi
    done
    if want armv7-unknown-linux-musleabihf || want arm-unknown-linux-musleabihf; then
        rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src >&2
    fi
    if want arm-unknown-linux-musleabihf; then
        if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then
            log "pip: installing ziglang cargo-zigbuild"
            python3 -m pip install -q ziglang cargo-zigbuild >&2 ||
                python3 -m pip install -q --break-system-packages ziglang cargo-zigbuild >&2
            hash -r
        fi
        if ! command -v cargo-zigbuild >/dev/null 2>&1; then
            log "cargo-zigbuild not on PATH after pip: cargo install cargo-zigbuild"
            cargo install --locked cargo-zigbuild >&2
        fi
    fi
fi

# armhf musl sysroot from Debian's musl-dev, with a specs file and a gcc
# wrapper that compiles and links against it.
armhf_musl_cc() {
    foreign_apt_update armhf
    local deb ver dir lib
    deb=$(foreign_download armhf musl-dev)
    ver=$(basename "$deb" .deb)
    dir=$EDGEDEPLOY_CACHE/sysroot/$ver
    lib=$dir/usr/lib/arm-linux-musleabihf
    if [ ! -x "$dir/arm-linux-musleabihf-gcc" ]; then
        log "unpacking $(basename "$deb") into $dir"
        rm -rf "$dir.tmp"
        mkdir -p "$dir.tmp"
        dpkg-deb -x "$deb" "$dir.tmp"
        # Rust's std for musl links -lunwind (LLVM libunwind, normally from the
        # self-contained rust-std, absent with build-std): libgcc's unwinder
        # provides the same _Unwind_* API. A linker script stands in for it.
        echo 'INPUT(-lgcc_eh -lgcc)' >"$dir.tmp/usr/lib/arm-linux-musleabihf/libunwind.a"
        # Debian's musl-gcc.specs, pointed at the unpacked tree, with crt1.o
        # for -static and rcrt1.o for -static-pie.
        sed -e "s#/usr/include/arm-linux-musleabihf#$dir/usr/include/arm-linux-musleabihf#g" \
            -e "s#/usr/lib/arm-linux-musleabihf#$lib#g" \
            -e "s#%{!shared: $lib/Scrt1.o}#%{static-pie:$lib/rcrt1.o} %{!static-pie:%{static:$lib/crt1.o} %{!static:%{!shared:$lib/Scrt1.o}}}#" \
            "$dir.tmp/usr/lib/arm-linux-musleabihf/musl-gcc.specs" >"$dir.tmp/musl.specs"
        grep -q "$lib/crt1.o" "$dir.tmp/musl.specs" || die "musl-gcc.specs has an unexpected format"
        cat >"$dir.tmp/arm-linux-musleabihf-gcc" <<EOF
#!/bin/sh
exec arm-linux-gnueabihf-gcc -specs=$dir/musl.specs "\$@"
EOF
        chmod +x "$dir.tmp/arm-linux-musleabihf-gcc"
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
    fi
    echo "$dir/arm-linux-musleabihf-gcc"
}

# ---- build ----------------------------------------------------------------

env_name() { echo "$1" | tr 'a-z-' 'A-Z_'; }

build_one() { # TARGET VARIANT -> prints the output path
    local t=$1 v=$2 T feat=() cmd=(cargo build) extra=() bin dest
    T=$(env_name "$t")
    if [ "$v" = notls ]; then
        feat=(--no-default-features)
    elif grep -Eq '^tls *=' "$repo/Cargo.toml"; then
        # The agent's own features only: the default set also holds the server.
        feat=(--no-default-features --features tls)
    fi
    case $t in
    aarch64-unknown-linux-musl)
        export "CARGO_TARGET_${T}_LINKER=rust-lld"
        # C code of dependencies (ring, with TLS) is compiled by Debian's gcc.
        export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
        export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
        ;;
    armv7-unknown-linux-musleabihf)
        local cc
        cc=$(armhf_musl_cc)
        export "CARGO_TARGET_${T}_LINKER=$cc"
        export CC_armv7_unknown_linux_musleabihf=$cc
        export AR_armv7_unknown_linux_musleabihf=arm-linux-gnueabihf-ar
        export "CARGO_TARGET_${T}_RUSTFLAGS=-C link-self-contained=no"
        export RUSTC_BOOTSTRAP=1
        extra=(-Zbuild-std=std,panic_abort)
        ;;
    arm-unknown-linux-musleabihf)
        cmd=(cargo zigbuild)
        export "CARGO_TARGET_${T}_RUSTFLAGS=-C link-self-contained=no"
        export RUSTC_BOOTSTRAP=1
        extra=(-Zbuild-std=std,panic_abort)
        ;;
    x86_64-unknown-linux-musl) ;;
    esac
    log "build $t ($v): ${cmd[*]} --release --bin edgedeploy-agent ${feat[*]} --target $t ${extra[*]}"
    bin=$CARGO_TARGET_DIR/$t/release/edgedeploy-agent
    # (Called in $(...) under `if`: errexit is off here, check each step.)
    rm -f "$bin"
    if ! (cd "$repo" && "${cmd[@]}" --release --bin edgedeploy-agent "${feat[@]}" --target "$t" "${extra[@]}") >&2; then
        log "build of $t ($v) failed"
        return 1
    fi
    [ -f "$bin" ] || { log "no binary at $bin"; return 1; }
    dest=$out_root/$t/edgedeploy-agent
    [ "$v" = notls ] && dest=$dest-notls
    mkdir -p "$out_root/$t" || return 1
    cp -f "$bin" "$dest.tmp" || return 1
    strip_for "$t" "$dest.tmp"
    mv -f "$dest.tmp" "$dest" || return 1
    echo "$dest"
}

strip_for() { # TARGET FILE
    local s
    case $1 in
    aarch64-*) s=aarch64-linux-gnu-strip ;;
    armv7-* | arm-*) s=arm-linux-gnueabihf-strip ;;
    *) s=strip ;;
    esac
    command -v "$s" >/dev/null 2>&1 || s=llvm-strip
    command -v "$s" >/dev/null 2>&1 || return 0 # the release profile strips already
    "$s" "$2" 2>/dev/null || true
}

status=0
summary=()
start_all=$(date +%s)
for t in "${targets[@]}"; do
    t0=$(date +%s)
    declare -A size=()
    verdict=""
    for v in "${variants[@]}"; do
        if ! out=$(build_one "$t" "$v"); then
            summary+=("$(printf '%-32s BUILD FAILED (%s)' "$t" "$v")")
            status=1
            continue
        fi
        size[$v]=$(stat -c %s "$out")
        f=$(file -b "$out")
        if ! grep -Eq 'statically linked|static-pie linked' <<<"$f"; then
            log "NOT STATIC: $out: $f"
            status=1
        fi
        [ -z "$verdict" ] && verdict=$f
        [ "$v" = notls ] && verdict=$f
    done
    summary+=("$(printf '%-32s notls %8s  tls %8s  (%ss)  %s' "$t" "${size[notls]:--}" "${size[tls]:--}" "$(($(date +%s) - t0))" \
        "$(sed 's/, BuildID[^,]*//; s/, with debug_info//' <<<"$verdict")")")
    unset size
done

echo
echo "edgedeploy-agent static builds (stripped sizes in bytes), in $out_root:"
for l in "${summary[@]}"; do echo "  $l"; done
echo "  total $(($(date +%s) - start_all)) s"
exit "$status"
