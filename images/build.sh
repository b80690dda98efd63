#!/usr/bin/env bash
# Build the QEMU device image of one architecture.
#
#   images/build.sh arm64|armhf [--agent PATH] [--no-install]
#
# Output in target/images/ARCH/ (IMAGES_OUT overrides target/images):
#   vmlinuz              Debian's kernel (linux-image-cloud-arm64 / linux-image-armmp,
#                        version resolved from the metapackage at build time)
#   initramfs.cpio.gz    busybox (busybox-static), the kernel modules for virtio and
#                        ext4, /init, busybox init + init scripts, edgedeploy-agent
#   qemu.conf            machine, cpu, kernel version, for images/run-tests.sh
#
# The agent is target/cross/<triple>/edgedeploy-agent-notls (aarch64-unknown-linux-musl
# for arm64, armv7-unknown-linux-musleabihf for armhf), built by cross/build.sh when
# missing. Debian packages are downloaded through a private apt configuration
# and cached in $EDGEDEPLOY_CACHE (default /var/cache/edgedeploy).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cross/lib.sh
. "$repo/cross/lib.sh"

arch=""
agent=""
install=1
while [ $# -gt 0 ]; do
    case $1 in
    arm64 | armhf) arch=$1; shift ;;
    --agent) agent=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "usage: images/build.sh arm64|armhf [--agent PATH] [--no-install]" ;;
    esac
done
[ -n "$arch" ] || die "usage: images/build.sh arm64|armhf [--agent PATH] [--no-install]"

case $arch in
arm64)
    triple=aarch64-unknown-linux-musl
    kernel_meta=linux-image-cloud-arm64
    qemu=qemu-system-aarch64
    machine="virt"
    cpu=cortex-a53
    ;;
armhf)
    triple=armv7-unknown-linux-musleabihf
    kernel_meta=linux-image-armmp
    qemu=qemu-system-arm
    machine="virt,highmem=off"
    cpu=cortex-a15
    ;;
esac

[ "$install" = 1 ] && apt_ensure cpio gzip file

out=${IMAGES_OUT:-$repo/target/images}/$arch
mkdir -p "$out"

if [ -z "$agent" ]; then
    agent=${CROSS_OUT:-$repo/target/cross}/$triple/edgedeploy-agent-notls
    if [ ! -x "$agent" ]; then
        log "no $agent: building it"
        extra=()
        [ "$install" = 1 ] || extra=(--no-install)
        "$repo/cross/build.sh" --targets "$triple" --variants notls "${extra[@]}"
    fi
fi
[ -x "$agent" ] || die "agent binary $agent missing"
file -b "$agent" | grep -Eq 'statically linked|static-pie' || die "$agent is not static"

foreign_apt_update "$arch"
kpkg=$(foreign_depends "$arch" "$kernel_meta" '^linux-image-[0-9]')
[ -n "$kpkg" ] || die "cannot resolve $kernel_meta"
kdeb=$(foreign_download "$arch" "$kpkg")
bdeb=$(foreign_download "$arch" busybox-static)
log "$arch: kernel $(basename "$kdeb"), $(basename "$bdeb")"

# Unpacked kernel package, cached per version.
kdir=$EDGEDEPLOY_CACHE/unpacked/$(basename "$kdeb" .deb)
if [ ! -d "$kdir/boot" ]; then
    rm -rf "$kdir.tmp"
    mkdir -p "$kdir.tmp"
    dpkg-deb -x "$kdeb" "$kdir.tmp"
    mv "$kdir.tmp" "$kdir"
fi
kver=$(basename "$(ls -d "$kdir"/lib/modules/*)")
mods=$kdir/lib/modules/$kver

# ---- initramfs tree ----
root=$(mktemp -d "${TMPDIR:-/tmp}/edgedeploy-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,data,root,var,lib/modules}
dpkg-deb --fsys-tarfile "$bdeb" | tar -x -C "$root" ./bin/busybox
chmod 755 "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
ln -s ../bin/busybox "$root/sbin/init"
cp -a "$here/rootfs/." "$root/"
install -m 0755 "$agent" "$root/usr/bin/edgedeploy-agent"
mkdir -p "$root/etc/edgedeploy"
echo "$kver" >"$root/etc/edgedeploy/kernel-version"

# Kernel modules: the wanted ones that exist as modules (the rest is built
# in), with their dependencies from each module's depends= field, ordered
# dependencies first. crc32c_generic goes before ext4 (its crypto softdep).
wanted=(virtio virtio_ring virtio_mmio virtio_blk failover net_failover virtio_net virtio-rng
    crc16 crc32c_generic libcrc32c mbcache jbd2 ext4)
declare -A ko_path=() done_mod=()
while IFS= read -r f; do
    n=$(basename "$f")
    n=${n%.ko*}
    ko_path[$n]=$f
    ko_path[${n//-/_}]=$f
done < <(find "$mods/kernel" -name '*.ko*')
order=()
add_module() {
    local n=${1//-/_} f deps d
    [ -n "${done_mod[$n]:-}" ] && return 0
    f=${ko_path[$n]:-}
    [ -n "$f" ] || return 0 # built in
    done_mod[$n]=1
    case $f in
    *.ko.xz) deps=$(xz -dc "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1) ;;
    *.ko.zst) deps=$(zstd -dc "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1) ;;
    *) deps=$(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | head -n 1) ;;
    esac
    for d in ${deps//,/ }; do add_module "$d"; done
    order+=("$n")
}
for m in "${wanted[@]}"; do add_module "$m"; done
: >"$root/lib/modules/load-order"
for n in "${order[@]}"; do
    f=${ko_path[$n]}
    case $f in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$n.ko" ;;
    *.ko.zst) zstd -q -dc "$f" >"$root/lib/modules/$n.ko" ;;
    *) cp "$f" "$root/lib/modules/$n.ko" ;;
    esac
    echo "$n.ko" >>"$root/lib/modules/load-order"
done
log "$arch: modules ${order[*]}"

# /dev/console must exist before devtmpfs is mounted (the kernel opens it
# for /init's stdio).
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --quiet) >"$out/initramfs.cpio"
# The node goes in a tiny second archive appended to the first (the
# kernel reads concatenated newc archives); it needs mknod, so root.
if [ "$(id -u)" -eq 0 ]; then
    ndir=$(mktemp -d)
    mkdir -p "$ndir/dev"
    mknod -m 600 "$ndir/dev/console" c 5 1
    (cd "$ndir" && echo ./dev/console | cpio -o -H newc -R 0:0 --quiet) >>"$out/initramfs.cpio"
    rm -rf "$ndir"
fi
gzip -9 -n -f "$out/initramfs.cpio"
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"

cat >"$out/qemu.conf" <<EOF
ARCH=$arch
QEMU=$qemu
MACHINE=$machine
CPU=$cpu
KERNEL_VERSION=$kver
KERNEL_PACKAGE=$(basename "$kdeb")
BUSYBOX_PACKAGE=$(basename "$bdeb")
AGENT_TRIPLE=$triple
AGENT_SIZE=$(stat -c %s "$agent")
EOF
log "$arch: $out/vmlinuz ($(stat -c %s "$out/vmlinuz") bytes), $out/initramfs.cpio.gz ($(stat -c %s "$out/initramfs.cpio.gz") bytes), agent $(stat -c %s "$agent") bytes"
