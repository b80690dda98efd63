#!/usr/bin/env bash
# Benchmark of the agent daemon, `edgedeploy-agent run`, against a real
# `edgedeploy server` on loopback. Prints figures; asserts nothing.
#
#   bench/agent-daemon.sh           5,000 files (~50 MB) in 50 directories, 20 s idle
#   bench/agent-daemon.sh --quick   500 files (~5 MB), 5 s idle (CI)
#   bench/agent-daemon.sh --idle 60 a longer idle measurement
#
# Measures: the agent idle (CPU time from /proc/PID/stat, VmRSS/VmHWM),
# one deployment of the bundle (5 hooks) with `edgedeploy deploy --wait`
# (wall time, per-event times from the server, the agent's CPU and peak
# RSS), and, as the baseline in the same invocation, `edgedeploy-agent
# deploy-local` of the very bundle the daemon downloaded, under GNU time.
#
# Needs: cargo with the x86_64-unknown-linux-musl target, GNU time
# (/usr/bin/time), python3 with boto3, GNU tar, gzip, file. Data go to
# bench-out/ (or $BENCH_OUT); the bundle of bench/deploy-local.sh is reused
# from there when present. Builds go to ${CARGO_TARGET_DIR:-target}.
set -euo pipefail

FILES=5000
DIRS=50
IDLE=20
MODE=full

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) FILES=500; IDLE=5; MODE=quick ;;
        --idle) IDLE=${2:?--idle needs seconds}; shift ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "$0")/.." && pwd -P) # physical: install refuses destinations through links
TARGET=x86_64-unknown-linux-musl
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
OUT=${BENCH_OUT:-$REPO/bench-out}
BIN=$OUT/daemon-bin
RUN=$OUT/daemon-run-$MODE
GENERATOR_VERSION=1 # that of bench/deploy-local.sh, whose bundle is reused

for tool in /usr/bin/time python3 tar gzip file cargo; do
    command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
python3 -c 'import boto3' 2>/dev/null || { echo "error: python3 needs boto3 (pip install boto3)" >&2; exit 2; }
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "error: the $TARGET target is missing: rustup target add $TARGET" >&2
    exit 2
fi
mkdir -p "$OUT" "$BIN"

# --- binaries ------------------------------------------------------------------

say() { echo "$*" >&2; }
say "building the server: cargo build --release --bin edgedeploy"
(cd "$REPO" && cargo build --quiet --release --bin edgedeploy)
cp "$TARGET_DIR/release/edgedeploy" "$BIN/edgedeploy"
musl() { # variant cargo-args...
    local variant=$1
    shift
    say "building the static agent ($variant): cargo build --release --target $TARGET $*"
    (cd "$REPO" && cargo build --quiet --release --target "$TARGET" --bin edgedeploy-agent "$@")
    cp "$TARGET_DIR/$TARGET/release/edgedeploy-agent" "$BIN/edgedeploy-agent-$variant"
}
musl notls --no-default-features
musl tls --no-default-features --features tls
SERVER=$BIN/edgedeploy
AGENT=$BIN/edgedeploy-agent-tls

# --- the revision: bench/deploy-local.sh's tree, our own destination -----------

SRC=$OUT/daemon-src-$FILES
SRC_KEY="generator=$GENERATOR_VERSION files=$FILES dirs=$DIRS"
if [ "$(cat "$SRC.key" 2>/dev/null)" != "$SRC_KEY" ]; then
    rm -rf "$SRC" "$SRC.key"
    mkdir -p "$SRC"
    CACHED=$OUT/bundle-$FILES.tgz
    if [ -f "$CACHED" ] && grep -q "^$SRC_KEY " "$CACHED.key" 2>/dev/null; then
        say "reusing $CACHED"
        tar -xzf "$CACHED" -C "$SRC"
    else
        say "generating $FILES files in $DIRS directories"
        # The generator of bench/deploy-local.sh (same seed, same tree).
        python3 "$REPO/bench/gen_tree.py" "$SRC" "$DIRS" "$FILES"
    fi
    echo "$SRC_KEY" >"$SRC.key"
fi
DEST=$RUN/install
python3 "$REPO/bench/gen_tree.py" --appspec "$SRC" "$DEST"

# --- server, device, agent ---------------------------------------------------

SERVER_PID= AGENT_PID=
stop() { # pid: SIGTERM, then SIGKILL after 10 s
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { stop "$AGENT_PID"; stop "$SERVER_PID"; }
trap cleanup EXIT

rm -rf "$RUN"
mkdir -p "$RUN"
DATA=$RUN/server
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$SERVER" server --data-dir "$DATA" --listen "127.0.0.1:$PORT" >"$RUN/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$RUN/server.log" >&2; exit 1; }
    sleep 0.1
done
"$SERVER" register-instance --data-dir "$DATA" --name bench-1 --tag bench=daemon \
    --agent-config "$RUN/agent.yml" --endpoint "$URL" >/dev/null
cat >>"$RUN/agent.yml" <<EOF
root_dir: $RUN/agent-root
wait_between_runs: 1
EOF

boto3() { # python script, with `c`, a codedeploy client as admin
    AWS_SHARED_CREDENTIALS_FILE=$DATA/admin-credentials AWS_CONFIG_FILE=/dev/null \
        AWS_EC2_METADATA_DISABLED=true python3 -c "
import boto3, json, sys
c = boto3.client('codedeploy', endpoint_url='$URL', region_name='us-east-1')
$1"
}
boto3 "
c.create_application(applicationName='bench')
c.create_deployment_group(applicationName='bench', deploymentGroupName='daemon',
    serviceRoleArn='arn:aws:iam::000000000000:role/edgedeploy',
    onPremisesInstanceTagFilters=[{'Key': 'bench', 'Value': 'daemon', 'Type': 'KEY_AND_VALUE'}])"

"$AGENT" run -c "$RUN/agent.yml" >"$RUN/agent.log" 2>&1 &
AGENT_PID=$!

TCK=$(getconf CLK_TCK)
cpu_ms() { # pid: utime + stime of the process itself, ms
    awk -v tck="$TCK" '{sub(/^.*\) /, ""); print ($12 + $13) * 1000 / tck}' "/proc/$1/stat"
}
status_kb() { # pid field: VmRSS, VmHWM (kB)
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}
now_ns() { date +%s%N; }

# --- idle ----------------------------------------------------------------------

for i in $(seq 100); do grep -q "running: host" "$RUN/agent.log" && break; sleep 0.1; done
sleep 2 # a few polls first
say "idle: measuring the agent for $IDLE s (it polls every 1 s)"
CPU0=$(cpu_ms "$AGENT_PID") T0=$(now_ns)
sleep "$IDLE"
CPU1=$(cpu_ms "$AGENT_PID") T1=$(now_ns)
IDLE_S=$(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
IDLE_CPU=$(awk -v a="$CPU0" -v b="$CPU1" 'BEGIN {printf "%.0f", b - a}')
IDLE_PCT=$(awk -v ms="$IDLE_CPU" -v s="$IDLE_S" 'BEGIN {printf "%.3f", ms / (s * 10)}')
IDLE_RSS=$(status_kb "$AGENT_PID" VmRSS) IDLE_HWM=$(status_kb "$AGENT_PID" VmHWM)

# --- one deployment --------------------------------------------------------------

say "pushing $SRC"
T0=$(now_ns)
"$SERVER" push --data-dir "$DATA" --application bench --source "$SRC" >"$RUN/push.out" 2>&1 ||
    { cat "$RUN/push.out" >&2; exit 1; }
PUSH_S=$(awk -v a="$T0" -v b="$(now_ns)" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
BUNDLE_BYTES=$(grep -o '([0-9]* bytes' "$RUN/push.out" | tr -dc 0-9)

say "deploying with edgedeploy deploy --wait"
CPU0=$(cpu_ms "$AGENT_PID") T0=$(now_ns)
"$SERVER" deploy --data-dir "$DATA" --application bench --deployment-group daemon --wait --timeout 1800 \
    >"$RUN/deploy.out" 2>&1 || { cat "$RUN/deploy.out" "$RUN/agent.log" >&2; exit 1; }
T1=$(now_ns) CPU1=$(cpu_ms "$AGENT_PID")
DEPLOY_S=$(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
DEPLOY_CPU=$(awk -v a="$CPU0" -v b="$CPU1" 'BEGIN {printf "%.0f", b - a}')
DEPLOY_RSS=$(status_kb "$AGENT_PID" VmRSS) DEPLOY_HWM=$(status_kb "$AGENT_PID" VmHWM)
ID=$(grep -o 'created deployment d-[A-Z0-9]*' "$RUN/deploy.out" | awk '{print $3}')
INSTALLED=$(find "$DEST" -type f | wc -l)
# The server's own times: creation to completion, and each event.
boto3 "
d = c.get_deployment(deploymentId='$ID')['deploymentInfo']
print('  %-34s %12.2f  %s' % ('server: create->complete (s)', (d['completeTime'] - d['createTime']).total_seconds(), 'createTime to completeTime'))
i = c.get_deployment_instance(deploymentId='$ID', instanceId='bench-1')['instanceSummary']
for e in i['lifecycleEvents']:
    took = (e['endTime'] - e['startTime']).total_seconds() if 'endTime' in e and 'startTime' in e else float('nan')
    print('    %-32s %12.2f  %s' % (e['lifecycleEventName'] + ' (s)', took, e['status']))
" >"$RUN/server-times.txt"
stop "$AGENT_PID"
AGENT_PID=

# --- baseline: deploy-local of the bundle the daemon downloaded ------------------

BUNDLE=$(find "$RUN/agent-root" -path "*/$ID/bundle.tar" | head -n 1)
[ -n "$BUNDLE" ] || { echo "error: no bundle.tar of $ID under $RUN/agent-root" >&2; exit 1; }
cp "$BUNDLE" "$RUN/bundle.tgz"
rm -rf "$DEST"
cat >"$RUN/local.yml" <<EOF
root_dir: $RUN/local-root
log_dir: $RUN/local-log
EOF
say "baseline: edgedeploy-agent deploy-local of the same bundle"
T0=$(now_ns)
/usr/bin/time -v -o "$RUN/local.time" "$AGENT" deploy-local -l "$RUN/bundle.tgz" -t tgz -c "$RUN/local.yml" \
    >"$RUN/local.out" 2>&1 || { cat "$RUN/local.out" >&2; exit 1; }
LOCAL_S=$(awk -v a="$T0" -v b="$(now_ns)" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
LOCAL_RSS=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$RUN/local.time")
LOCAL_CPU=$(awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {printf "%.0f", (u + s) * 1000}' "$RUN/local.time")
stop "$SERVER_PID"
SERVER_PID=
UNPACKED=$(gzip -dc "$RUN/bundle.tgz" | tar -t -v -f - | awk '{s += $3} END {print s}')
rm -rf "$DEST" "$DATA" "$RUN/agent-root" "$RUN/local-root" "$RUN/bundle.tgz" # logs stay

# --- report --------------------------------------------------------------------

row() { printf '  %-34s %12s  %s\n' "$@"; }
echo
echo "edgedeploy agent daemon benchmark ($MODE)"
echo "  agent      $("$AGENT" --version), static $TARGET release, --features tls; server: release build"
echo "  machine    $(uname -srm), $(nproc) CPUs"
echo "  bundle     $INSTALLED files installed, $UNPACKED bytes unpacked, ${BUNDLE_BYTES:-?} bytes tgz, 5 hooks"
echo "  transport  http on loopback, wait_between_runs: 1"
echo
echo "idle ($IDLE_S s, polling every 1 s)"
row "agent CPU time (ms)" "$IDLE_CPU" "utime+stime, /proc/PID/stat ($((1000 / TCK)) ms ticks)"
row "agent CPU (% of one core)" "$IDLE_PCT"
row "agent VmRSS (KiB)" "$IDLE_RSS"
row "agent VmHWM (KiB)" "$IDLE_HWM" "peak since start"
echo
echo "deployment $ID (edgedeploy deploy --wait; the CLI polls every 0.5 s)"
row "push (s)" "$PUSH_S" "edgedeploy push: tgz + upload + register"
row "deploy --wait wall (s)" "$DEPLOY_S"
cat "$RUN/server-times.txt"
row "agent CPU time (ms)" "$DEPLOY_CPU" "the agent process, hooks excluded"
row "agent VmRSS after (KiB)" "$DEPLOY_RSS"
row "agent VmHWM after (KiB)" "$DEPLOY_HWM" "peak of the daemon over its whole run"
echo
echo "baseline: edgedeploy-agent deploy-local of the same bundle (/usr/bin/time -v)"
row "wall (s)" "$LOCAL_S"
row "CPU time (ms)" "$LOCAL_CPU" "user+sys, hooks included"
row "peak RSS (KiB)" "$LOCAL_RSS" "max over the process and its hooks"
echo
echo "static agent binaries ($TARGET, release profile: opt-level z, lto, strip)"
for variant in tls notls; do
    bin=$BIN/edgedeploy-agent-$variant
    label="--features tls"
    [ "$variant" = notls ] && label="no TLS"
    printf '  %-20s %9s bytes  %s\n' "$label" "$(stat -c %s "$bin")" "$(file -b "$bin" | sed 's/, BuildID[^,]*//')"
done
echo
echo "logs: $RUN"
