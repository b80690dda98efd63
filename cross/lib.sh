# Shared helpers for cross/build.sh and images/*.sh. Source it; it defines
# functions only (plus EDGEDEPLOY_CACHE), it runs nothing.
#
#   EDGEDEPLOY_CACHE   download/unpack cache, kept between runs
#                      (default /var/cache/edgedeploy when writable, else
#                      <repo>/images/.cache, which is gitignored)
#   DEBIAN_MIRROR      default http://deb.debian.org/debian
#   DEBIAN_SUITE       default bookworm

_lib_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${EDGEDEPLOY_CACHE:-}" ]; then
    if mkdir -p /var/cache/edgedeploy 2>/dev/null && [ -w /var/cache/edgedeploy ]; then
        EDGEDEPLOY_CACHE=/var/cache/edgedeploy
    else
        EDGEDEPLOY_CACHE=$_lib_repo/images/.cache
    fi
fi
export EDGEDEPLOY_CACHE
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_ensure PKG...: install the host (amd64) packages that are missing.
# A machine where qemu-utils (or another qemu package) already comes from
# bookworm-backports cannot install Debian 12's qemu-system-arm next to it
# (qemu-system-common 7.2 breaks qemu-utils 10): the qemu packages are then
# taken from bookworm-backports too, through a private apt configuration
# (the machine's sources are not changed).
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Update only when the package lists are older than a day (or absent).
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
        as_root apt-get update -q >&2 || true
    fi
    # A plain install must be possible without removing anything: apt would
    # otherwise "solve" a clash by removing the backported qemu-utils (and
    # with it qemu-img), which the simulation alone does not count as failing.
    local plan
    if plan=$(as_root apt-get install -s -y -q --no-install-recommends "${missing[@]}" 2>/dev/null) &&
        ! grep -q '^Remv ' <<<"$plan"; then
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
        return
    fi
    log "apt: plain install impossible (backported qemu on this machine?): using bookworm-backports"
    local d=$EDGEDEPLOY_CACHE/apt-backports
    mkdir -p "$d/lists/partial" "$d/archives/partial"
    cat >"$d/sources.list" <<EOF
deb [arch=amd64] $DEBIAN_MIRROR $DEBIAN_SUITE main
deb [arch=amd64] $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb [arch=amd64] $DEBIAN_MIRROR $DEBIAN_SUITE-backports main
EOF
    local o=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::lists=$d/lists" -o "Dir::Cache::archives=$d/archives"
        -o APT::Sandbox::User=root)
    as_root apt-get "${o[@]}" update -q >&2
    as_root apt-get "${o[@]}" install -y -q --no-install-recommends \
        -t "$DEBIAN_SUITE-backports" "${missing[@]}" >&2
}

# Private apt configuration for foreign-architecture downloads (arm64,
# armhf): own sources.list, lists, cache and an empty dpkg status, so the
# machine's apt state is never touched (no dpkg --add-architecture).
_foreign_apt_dir() { echo "$EDGEDEPLOY_CACHE/apt-$1"; }

_foreign_apt_opts() {
    local arch=$1 d
    d=$(_foreign_apt_dir "$arch")
    echo "-o Dir::Etc::sourcelist=$d/sources.list -o Dir::Etc::sourceparts=- \
-o Dir::Etc::preferencesparts=$d/empty -o Dir::Etc::preferences=$d/empty/none -o Dir::State::lists=$d/lists \
-o Dir::State::status=$d/status -o Dir::Cache=$d/cache \
-o Dir::Cache::archives=$d/cache/archives \
-o APT::Architecture=$arch -o APT::Architectures=$arch \
-o APT::Sandbox::User=root -o Acquire::Languages=none"
}

# foreign_apt_update ARCH: refresh the private lists when older than a day.
foreign_apt_update() {
    local arch=$1 d
    d=$(_foreign_apt_dir "$arch")
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/empty"
    : >>"$d/status"
    cat >"$d/sources.list" <<EOF
deb [arch=$arch] $DEBIAN_MIRROR $DEBIAN_SUITE main
deb [arch=$arch] $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
EOF
    if [ -n "$(find "$d/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
        return 0
    fi
    log "apt ($arch): updating private package lists"
    # shellcheck disable=SC2046
    apt-get $(_foreign_apt_opts "$arch") update -q >&2
}

# foreign_apt ARCH apt-get|apt-cache ARGS...
foreign_apt() {
    local arch=$1 tool=$2
    shift 2
    # shellcheck disable=SC2046
    "$tool" $(_foreign_apt_opts "$arch") "$@"
}

# foreign_version ARCH PKG: candidate version of PKG.
foreign_version() {
    foreign_apt "$1" apt-cache show --no-all-versions "$2" | sed -n 's/^Version: //p' | head -n 1
}

# foreign_depends ARCH PKG REGEX: the first Depends of PKG matching REGEX
# (resolves a metapackage such as linux-image-armmp to the versioned image).
foreign_depends() {
    foreign_apt "$1" apt-cache show --no-all-versions "$2" | sed -n 's/^Depends: //p' \
        | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -E "$3" | head -n 1
}

# foreign_download ARCH PKG: path of PKG's .deb (candidate version) in the
# cache, downloading it when absent.
foreign_download() {
    local arch=$1 pkg=$2 d ver deb
    d=$EDGEDEPLOY_CACHE/debs/$arch
    mkdir -p "$d"
    ver=$(foreign_version "$arch" "$pkg")
    [ -n "$ver" ] || die "no $pkg for $arch in $DEBIAN_SUITE"
    deb=$(ls "$d/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        log "apt ($arch): downloading $pkg $ver"
        (cd "$d" && foreign_apt "$arch" apt-get download -q "$pkg=$ver" >&2)
        deb=$(ls "$d/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n 1 || true)
        [ -n "$deb" ] || die "download of $pkg $ver failed"
    fi
    echo "$deb"
}
