#!/usr/bin/env bash
# Benchmark of `edgedeploy-agent deploy-local` against a plain
# `tar xzf` + `cp -a` + `sync` of the same bundle. Prints figures; the
# targets are printed beside them, nothing is asserted about time.
#
#   bench/deploy-local.sh            5,000 files (~50 MB) in 50 directories, 3 runs each
#   bench/deploy-local.sh --quick    500 files (~5 MB), 1 run each (CI)
#   bench/deploy-local.sh --runs 5   more runs
#
# Needs: cargo with the x86_64-unknown-linux-musl target, GNU time
# (/usr/bin/time), python3, GNU tar, gzip, file. Data and run directories
# go to bench-out/ (or $BENCH_OUT). The agent is built into
# ${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/.
set -euo pipefail

FILES=5000
DIRS=50
RUNS=3
MODE=full

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) FILES=500; RUNS=1; MODE=quick ;;
        --runs) RUNS=${2:?--runs needs a number}; shift ;;
        -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "$0")/.." && pwd -P) # physical: install refuses destinations through links
TARGET=x86_64-unknown-linux-musl
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
OUT=${BENCH_OUT:-$REPO/bench-out}
RUN=$OUT/run
GENERATOR_VERSION=1

for tool in /usr/bin/time python3 tar gzip file cargo; do
    command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "error: the $TARGET target is missing: rustup target add $TARGET" >&2
    exit 2
fi
mkdir -p "$OUT" "$RUN"

# --- the agent: static musl release builds, without and with TLS -----------

build() { # label cargo-args...
    local label=$1
    shift
    echo "building the agent ($label): cargo build --release --target $TARGET $*" >&2
    (cd "$REPO" && cargo build --quiet --release --target "$TARGET" --bin edgedeploy-agent "$@")
}
build "no TLS" --no-default-features
cp "$TARGET_DIR/$TARGET/release/edgedeploy-agent" "$OUT/edgedeploy-agent-notls"
build "default features, TLS"
cp "$TARGET_DIR/$TARGET/release/edgedeploy-agent" "$OUT/edgedeploy-agent-tls"
AGENT=$TARGET_DIR/$TARGET/release/edgedeploy-agent

# --- the bundle: deterministic content, cached by its parameters -----------

DEST=$RUN/agent-install
BUNDLE=$OUT/bundle-$FILES.tgz
KEY="generator=$GENERATOR_VERSION files=$FILES dirs=$DIRS destination=$DEST"
if [ ! -f "$BUNDLE" ] || [ "$(cat "$BUNDLE.key" 2>/dev/null)" != "$KEY" ]; then
    echo "generating $FILES files in $DIRS directories" >&2
    SRC=$OUT/bundle-src-$FILES
    rm -rf "$SRC" "$BUNDLE" "$BUNDLE.key"
    python3 "$REPO/bench/gen_tree.py" "$SRC" "$DIRS" "$FILES"
    python3 "$REPO/bench/gen_tree.py" --appspec "$SRC" "$DEST"
    tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -C "$SRC" -czf "$BUNDLE" .
    echo "$KEY" >"$BUNDLE.key"
    rm -rf "$SRC"
fi
UNPACKED_BYTES=$(gzip -dc "$BUNDLE" | tar -t -v -f - | awk '{s += $3} END {print s}')
ENTRIES=$(gzip -dc "$BUNDLE" | tar -t -f - | wc -l)

CONF=$RUN/agent.yml
cat >"$CONF" <<EOF
root_dir: $RUN/agent-root
log_dir: $RUN/agent-log
EOF
BASE_X=$RUN/baseline-extract
BASE_D=$RUN/baseline-install
BASELINE_CMD=$(printf 'mkdir -p %q %q && tar xzf %q -C %q && cp -a %q/. %q && sync' \
    "$BASE_X" "$BASE_D" "$BUNDLE" "$BASE_X" "$BASE_X" "$BASE_D")

# --- measuring ---------------------------------------------------------------

# measure NAME CMD...: runs CMD under GNU time; sets WALL (s) and RSS (KiB).
measure() {
    local name=$1 tf=$RUN/$1.time start end
    shift
    start=$(date +%s%N)
    if ! /usr/bin/time -v -o "$tf" "$@" >"$RUN/$name.out" 2>&1; then
        echo "error: $name failed: $*" >&2
        tail -n 40 "$RUN/$name.out" >&2
        exit 1
    fi
    end=$(date +%s%N)
    WALL=$(awk -v ns=$((end - start)) 'BEGIN {printf "%.3f", ns / 1e9}')
    RSS=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
}

fresh_agent() { rm -rf "$RUN/agent-root" "$RUN/agent-log" "$DEST"; }
fresh_baseline() { rm -rf "$BASE_X" "$BASE_D"; }
run_agent() { fresh_agent; measure agent "$AGENT" deploy-local -l "$BUNDLE" -t tgz -c "$CONF"; }
run_baseline() { fresh_baseline; measure baseline bash -c "$BASELINE_CMD"; }

echo "warm-up: one run of each" >&2
run_agent
INSTALLED=$(find "$DEST" -type f | wc -l)
BUNDLE_FILES=$(gzip -dc "$BUNDLE" | tar -t -v -f - | grep -c '^-')
if [ "$INSTALLED" -ne "$BUNDLE_FILES" ]; then
    echo "error: the agent installed $INSTALLED files, the bundle has $BUNDLE_FILES" >&2
    exit 1
fi
run_baseline

AGENT_WALL=() AGENT_RSS=() BASE_WALL=() BASE_RSS=()
for i in $(seq "$RUNS"); do
    echo "run $i of $RUNS" >&2
    run_agent
    AGENT_WALL+=("$WALL") AGENT_RSS+=("$RSS")
    run_baseline
    BASE_WALL+=("$WALL") BASE_RSS+=("$RSS")
done
fresh_agent
fresh_baseline

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
row() { # label median values...
    local label=$1 med=$2
    shift 2
    printf '  %-24s %10s   (runs: %s)\n' "$label" "$med" "$*"
}

AW=$(median "${AGENT_WALL[@]}") BW=$(median "${BASE_WALL[@]}")
AR=$(median "${AGENT_RSS[@]}") BR=$(median "${BASE_RSS[@]}")
WALL_RATIO=$(awk -v a="$AW" -v b="$BW" 'BEGIN {printf "%.2f", a / b}')
RSS_RATIO=$(awk -v a="$AR" -v b="$BR" 'BEGIN {printf "%.2f", a / b}')
AR_MB=$(awk -v k="$AR" 'BEGIN {printf "%.1f", k / 1024}')
verdict() { if awk -v v="$1" -v t="$2" 'BEGIN {exit !(v <= t)}'; then echo met; else echo "NOT met"; fi; }

echo
echo "edgedeploy deploy-local benchmark ($MODE)"
echo "  agent      $("$AGENT" --version), $TARGET release"
echo "  machine    $(uname -srm), $(nproc) CPUs"
echo "  bundle     $ENTRIES entries, $BUNDLE_FILES files in $DIRS directories, $UNPACKED_BYTES bytes unpacked, $(stat -c %s "$BUNDLE") bytes tgz"
echo "  agent      deploy-local -t tgz, fresh root_dir and destination each run, 5 hooks (ApplicationStop skipped: first deployment)"
echo "  baseline   bash -c 'tar xzf into a fresh dir && cp -a to a fresh destination && sync'"
echo "  each       1 warm-up run, then $RUNS measured; median shown"
echo
row "agent wall (s)" "$AW" "${AGENT_WALL[@]}"
row "baseline wall (s)" "$BW" "${BASE_WALL[@]}"
row "agent peak RSS (KiB)" "$AR" "${AGENT_RSS[@]}"
row "baseline peak RSS (KiB)" "$BR" "${BASE_RSS[@]}"
echo
echo "  wall agent/baseline      ${WALL_RATIO}x    target <= 1.5x: $(verdict "$WALL_RATIO" 1.5)"
echo "  peak RSS agent           ${AR_MB} MiB   target <= 8 MB: $(verdict "$AR" 8192)"
echo "  peak RSS agent/baseline  ${RSS_RATIO}x"
echo "  (peak RSS is GNU time's maximum over the process and the children it waited for: hooks, tar, gzip, cp)"
echo
echo "static agent binaries ($TARGET, release profile: opt-level z, lto, strip)"
for variant in tls notls; do
    bin=$OUT/edgedeploy-agent-$variant
    label="default features (TLS)"
    [ "$variant" = notls ] && label="--no-default-features"
    printf '  %-24s %9s bytes  %s\n' "$label" "$(stat -c %s "$bin")" "$(file -b "$bin")"
done
