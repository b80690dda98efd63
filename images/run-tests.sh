#!/usr/bin/env bash
# Device-level tests of the agent daemon in a QEMU guest: busybox init,
# the init script running `edgedeploy-agent run`, a persistent ext4 qcow2
# data disk, and a real `edgedeploy server` on this machine's loopback that
# the guest reaches only through QEMU's restricted user network.
#
#   images/run-tests.sh arm64|armhf [--cuts N] [--parts boot,crash,cuts]
#                       [--seed S] [--no-build] [--no-install]
#
# Setup: `edgedeploy server` (target/debug/edgedeploy, built when missing;
# EDGEDEPLOY_SERVER_BIN overrides) with short deadlines (--pickup-timeout
# 120 --event-timeout 300); `edgedeploy register-instance` writes the
# device's agent configuration, which goes on the data disk
# (mkfs.ext4 -d); application edgeapp, a deployment group selecting the
# device by tag, revisions A, B (~5 MB) and L (~50 MB) put in the server's
# bundle store and registered (boto3, images/lib/fleet.py). Deployments
# are made with CreateDeployment and followed on the server (GetDeployment,
# the target's lifecycle events).
#
# Parts, in this order, on one data disk:
#   boot   boot; the init script starts the daemon; boot-to-first-poll, the
#          agent's memory while idle; deployments A, L (50 MB), B, A, each
#          Succeeded on the server and checked in the guest, the app
#          (started by the ApplicationStart hook) running
#   crash  kill -9 of the agent process alone, inside the guest: (1) while
#          the BeforeInstall hook runs: init respawns it, it reports the
#          event Failed (a hook is never run twice), the device keeps the
#          previous revision, a follow-up deployment succeeds; (2) during
#          the bundle download: the download resumes and the deployment
#          succeeds; then a clean poweroff (init script stop)
#   cuts   N power cuts (kill -9 of qemu; default 20; 200 for the long
#          mode): cut i at a random instant of slice i of N of 1.15 x the
#          median measured switch of revisions, after CreateDeployment; boot again;
#          the deployment must end on the server; the revision its
#          lifecycle events say must be installed is checked in the guest
#          (sha256 of every file, no extra files, cleanup list, no
#          temporaries, no inflight.json, empty outbox, valid pointers);
#          a failed deployment is followed by another that must succeed.
#          Counts by phase at the cut and by outcome are printed.
#
# Exit status 0 when every check passed. Logs (serial consoles, server
# and agent logs) in target/images/ARCH/test-logs/. Needs root for apt
# (qemu-system-arm, qemu-utils, socat, e2fsprogs, python3), or those
# installed, and python3's boto3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$here/.." && pwd)
# shellcheck source=cross/lib.sh
. "$REPO/cross/lib.sh"

usage() { die "usage: images/run-tests.sh arm64|armhf [--cuts N] [--parts boot,crash,cuts] [--seed S] [--no-build] [--no-install]"; }
arch=""
cuts=20
parts="boot,crash,cuts"
seed=""
build=1
install=1
while [ $# -gt 0 ]; do
    case $1 in
    arm64 | armhf) arch=$1; shift ;;
    --cuts) cuts=$2; shift 2 ;;
    --cuts=*) cuts=${1#--cuts=}; shift ;;
    --parts) parts=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --no-install) install=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
    esac
done
[ -n "$arch" ] || usage
[[ $cuts =~ ^[0-9]+$ ]] || usage
has_part() { case ",$parts," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$install" = 1 ]; then
    apt_ensure qemu-system-arm qemu-utils socat e2fsprogs python3 cpio file gzip
fi
python3 -c 'import boto3' 2>/dev/null || die "python3 needs boto3 (pip install boto3)"
IMG=${IMAGES_OUT:-$REPO/target/images}/$arch
if [ "$build" = 1 ] || [ ! -f "$IMG/initramfs.cpio.gz" ]; then
    b=(); [ "$install" = 1 ] || b=(--no-install)
    "$here/build.sh" "$arch" "${b[@]}"
fi
SERVER_BIN=${EDGEDEPLOY_SERVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/edgedeploy}
if [ ! -x "$SERVER_BIN" ] || { [ "$build" = 1 ] && [ -z "${EDGEDEPLOY_SERVER_BIN:-}" ]; }; then
    log "building the server: cargo build --bin edgedeploy"
    (cd "$REPO" && cargo build --quiet --bin edgedeploy)
fi
# shellcheck source=images/lib/vm.sh
. "$here/lib/vm.sh"
vm_load_conf

WORK=$IMG/test-logs
rm -rf "$WORK"
mkdir -p "$WORK"
SRV=$WORK/srv
mkdir -p "$SRV"
seed=${seed:-$(date +%s)}
RANDOM=$seed
SERVER_PID=""

cleanup() {
    local st=$?
    vm_alive && kill -9 "$VM_PID" 2>/dev/null
    vm_reap 2>/dev/null || true
    httpd_stop
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}
check_ok() { [[ $1 == *" ok "* ]]; }
# brief RESULTLINE: the check's verdict without the bookkeeping fields.
brief() { sed 's/^EDGEDEPLOY-RESULT seq=[0-9]* check //; s/ exit=[0-9]*//; s/ uptime=[0-9.]*//' <<<"$1"; }
# The agent's log lines (relayed on the console) of this boot since line FROM.
agent_lines() { awk -v from="${1:-0}" 'NR > from && /EDGEDEPLOY-AGENT / { sub(/\r$/, ""); sub(/.*EDGEDEPLOY-AGENT /, ""); print }' "$VM_LOG"; }

T_ALL=$(now_ms)
echo "== device tests: $arch ($QEMU -M $MACHINE -cpu $CPU), kernel $KERNEL_VERSION, seed $seed"

# ---- revisions ----
gen_revs() { # DIR FILES BYTES NAMES
    if [ ! -s "$1/revisions.txt" ]; then
        # (Two runs may do this at once: each in its own temp dir; one wins.)
        python3 "$here/lib/gen-revisions.py" "$1.tmp.$$" --files "$2" --bytes "$3" --names "$4" >&2
        mkdir -p "$(dirname "$1")"
        mv -T "$1.tmp.$$" "$1" 2>/dev/null || rm -rf "$1.tmp.$$"
    fi
}
revs=$EDGEDEPLOY_CACHE/revisions/${REV_FILES:-400}-${REV_BYTES:-5000000}
large=$EDGEDEPLOY_CACHE/revisions/large-${LARGE_FILES:-200}-${LARGE_BYTES:-50000000}
gen_revs "$revs" "${REV_FILES:-400}" "${REV_BYTES:-5000000}" A,B
gen_revs "$large" "${LARGE_FILES:-200}" "${LARGE_BYTES:-50000000}" L,M
mkdir -p "$SRV/manifests"
cp "$revs/manifests/"{A,B}.sha256 "$large/manifests/L.sha256" "$SRV/manifests/"
bundle_of() { case $1 in L) echo "$large/bundles/L.tgz" ;; *) echo "$revs/bundles/$1.tgz" ;; esac; }
for r in A B L; do
    echo "   revision $r: $(wc -l <"$SRV/manifests/$r.sha256") files, bundle $(stat -c %s "$(bundle_of "$r")") bytes"
done
other() { if [ "$1" = A ]; then echo B; else echo A; fi; }
serve harness "0 none"
httpd_start "$SRV"

# ---- server, instance, provisioning ----
DATA=$WORK/server
SERVER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$SERVER_PORT
"$SERVER_BIN" server --data-dir "$DATA" --listen "127.0.0.1:$SERVER_PORT" \
    --pickup-timeout "${PICKUP_TIMEOUT:-120}" --event-timeout "${EVENT_TIMEOUT:-300}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
i=0
until (exec 3<>"/dev/tcp/127.0.0.1/$SERVER_PORT") 2>/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server did not start"; }
    i=$((i + 1))
    [ "$i" -lt 600 ] || die "the server does not listen on $SERVER_PORT"
    sleep 0.1
done
INSTANCE=device-$arch
PROV=$WORK/provision
mkdir -p "$PROV/etc/edgedeploy" "$PROV/log"
"$SERVER_BIN" register-instance --data-dir "$DATA" --name "$INSTANCE" --tag "device=$arch" \
    --agent-config "$PROV/etc/edgedeploy/agent.yml" --endpoint "http://10.0.2.100:$SERVER_PORT" >/dev/null
cat >>"$PROV/etc/edgedeploy/agent.yml" <<EOC
# Device settings (images/run-tests.sh): everything persistent on /data.
root_dir: /data/deployment-root
log_dir: /data/log
max_revisions: 2
wait_between_runs: ${WAIT_BETWEEN_RUNS:-1}
EOC
fleet() { python3 "$here/lib/fleet.py" "$DATA" "$URL" "$@"; }
DG=edgeapp-$arch
GROUP_ID=$(fleet setup "$DG" "device=$arch" "A=$(bundle_of A)" "B=$(bundle_of B)" "L=$(bundle_of L)")
echo "   server $URL (guest: http://10.0.2.100:$SERVER_PORT), instance $INSTANCE, group $DG ($GROUP_ID)"

# ---- data disk: ext4 made on the host with the device's configuration ----
DISK=$WORK/data.qcow2
truncate -s "${DISK_SIZE:-1G}" "$WORK/data.raw"
mkfs.ext4 -q -F -L edgedata -d "$PROV" "$WORK/data.raw"
qemu-img convert -f raw -O qcow2 "$WORK/data.raw" "$DISK"
rm -f "$WORK/data.raw"

qcow2_check() { # -> "ok" | "leaks N" | "ERRORS ..."
    local out
    if out=$(qemu-img check "$DISK" 2>&1); then
        echo ok
    elif [ $? -eq 3 ]; then
        echo "leaks $(sed -n 's/^\([0-9]*\) leaked clusters.*/\1/p' <<<"$out")"
    else
        echo "ERRORS $(tr '\n' ' ' <<<"$out" | cut -c1-200)"
    fi
}

# ---- deployments through the server ----
DEP=""      # the last deployment created
DEP_T0=0    # host ms at its creation
OUTCOME=""  # fleet.py wait's line for it
# deploy REV: CreateDeployment; sets DEP and DEP_T0.
deploy() {
    DEP_T0=$(now_ms)
    DEP=$(fleet deploy "$DG" "$1") || die "CreateDeployment of $1 failed"
}
# wait_dep SECS: waits for DEP to end; sets OUTCOME, OUT_STATUS, OUT_FAILED,
# OUT_INSTALLED, DEP_SECS (creation to end, host wall). Fails on timeout.
wait_dep() {
    if ! OUTCOME=$(fleet wait "$DEP" "$1"); then
        OUT_STATUS=TIMEOUT
        return 1
    fi
    DEP_SECS=$(secs_since "$DEP_T0")
    OUT_STATUS=${OUTCOME%% *}
    OUT_FAILED=$(sed -n 's/.* failed=\([^ ]*\).*/\1/p' <<<"$OUTCOME")
    OUT_INSTALLED=$(sed -n 's/.* installed=\([^ ]*\).*/\1/p' <<<"$OUTCOME")
}
# check REV STATUS [app]: the guest verifies the device; result in MK.
check() {
    harness check "$1" "$2" "$GROUP_ID" ${3:-} || { MK="no check result"; return 1; }
}

D_SWITCH=0 # median deployment time (host wall) of a switch between the 5 MB revisions
declare -a switch_secs=()
declare -a deploy_secs=()
# deploy_and_check REV [app]: deploys REV, which must succeed, and checks it.
deploy_and_check() {
    local rev=$1 app=${2:-} r
    deploy "$rev"
    if ! wait_dep 900; then
        fail "deployment $DEP of $rev did not end: $OUTCOME"
        console_tail
        return 1
    fi
    deploy_secs+=("$rev:$DEP_SECS")
    if [ "$OUT_STATUS" != Succeeded ]; then
        fail "deployment $DEP of $rev: $OUTCOME"
        agent_lines | tail -n 20 | sed 's/^/    | /'
        return 1
    fi
    if [ "$rev" != L ] && [ "${PREV_REV:-}" != "" ] && [ "$PREV_REV" != L ] && [ "$PREV_REV" != "$rev" ]; then
        # The median of the switches measured so far: robust to one run
        # slowed down by other load on the machine.
        switch_secs+=("$DEP_SECS")
        D_SWITCH=$(printf '%s\n' "${switch_secs[@]}" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    fi
    PREV_REV=$rev
    check "$rev" Succeeded $app || true
    r=$MK
    if check_ok "$r"; then
        pass
        [ -n "${QUIET:-}" ] || echo "   deploy $rev ($DEP): Succeeded in ${DEP_SECS}s (CreateDeployment to end); check: $(brief "$r")"
    else
        fail "check of $rev after $DEP: $r"
        console_tail 60
        return 1
    fi
}
# mem: the agent's VmHWM / VmRSS in the guest; sets MEM_HWM, MEM_RSS.
mem() {
    harness mem || { MEM_HWM=0; MEM_RSS=0; return 1; }
    MEM_HWM=$(field vmhwm_kb "$MK")
    MEM_RSS=$(field vmrss_kb "$MK")
}
first_conn_secs() { # NAME: host seconds from qemu launch to the guest's first connection to the server
    local t i=0
    while [ ! -s "$WORK/$1.conns" ]; do
        i=$((i + 1))
        [ "$i" -lt 2400 ] || { echo n/a; return; }
        sleep 0.05
    done
    t=$(head -n 1 "$WORK/$1.conns")
    awk -v a="$VM_T0" -v b="$t" 'BEGIN { printf "%.2f", (b - a) / 1000 }'
}

declare -a boot_poll=() boot_start=()
# boot_vm NAME: boots; waits for the init script's agent start and the
# agent's first request to the server; records both times.
boot_vm() {
    vm_start "$1" "$DISK"
    marker "agent-start" 180 || { console_tail; die "$1: the agent did not start"; }
    boot_start+=("$(field uptime "$MK")")
    boot_poll+=("$(first_conn_secs "$1")")
}

# ---- (a) boot ----
if has_part boot; then
    t=$(now_ms)
    echo "== boot: the init script starts the daemon; deployments A, L (50 MB), B, A with hooks"
    boot_vm boot
    echo "   agent started by the init script ${boot_start[0]}s after kernel start (guest uptime); its first request to the server (PollHostCommand: nothing in flight) ${boot_poll[0]}s after qemu launch"
    pass
    sleep 3 # a few idle polls
    mem && IDLE_HWM=$MEM_HWM IDLE_RSS=$MEM_RSS
    echo "   agent idle-polling (wait_between_runs 1 s): VmHWM ${IDLE_HWM:-?} kB, VmRSS ${IDLE_RSS:-?} kB"
    deploy_and_check A app || true
    deploy_and_check L app || true
    mem && PEAK_HWM=$MEM_HWM
    echo "   agent VmHWM after the 50 MB deployment (peak since start): ${PEAK_HWM:-?} kB (VmRSS now $MEM_RSS kB)"
    deploy_and_check B app || true
    deploy_and_check A app || true
    echo "   boot part: $(secs_since "$t")s"
    T_BOOT=$(secs_since "$t")s
fi

CUR=${PREV_REV:-}
# ensure_running: a booted guest with a revision deployed (A unless one is).
ensure_running() {
    vm_alive || boot_vm "${1:-resume}"
    if [ -z "$CUR" ] || [ "$CUR" = L ]; then
        deploy_and_check A || die "could not deploy A"
        CUR=A
    fi
}

# ---- (b) agent crash ----
if has_part crash; then
    t=$(now_ms)
    echo "== crash: kill -9 of the agent alone during a deployment; the init script respawns it"
    ensure_running crash
    # (1) In the BeforeInstall hook: reported Failed, never run twice.
    nxt=$(other "$CUR")
    harness_send crash hook before_install.sh
    deploy "$nxt"
    if marker "seq=$HARNESS_SEQ " 300 && [[ $MK == *" killed "* ]]; then
        pass
        echo "   harness: ${MK#*seq=* }"
    else
        fail "crash in BeforeInstall: ${MK:-no result}"
    fi
    if marker "agent-start" 90; then
        pass
        echo "   the init script started the agent again (start $(field start "$MK"), pid $(field pid "$MK"))"
    else
        fail "the agent was not started again"
    fi
    if wait_dep 600 && [ "$OUT_STATUS" = Failed ] && [ "$OUT_FAILED" = BeforeInstall ] &&
        [[ $OUTCOME == *"interrupted by agent restart during BeforeInstall"* ]]; then
        pass
        echo "   deployment $DEP: $OUT_STATUS in $OUT_FAILED (\"${OUTCOME#*message=}\") after ${DEP_SECS}s"
    else
        fail "after a kill in BeforeInstall, expected Failed in BeforeInstall (interrupted by agent restart): $OUTCOME"
    fi
    agent_lines | grep -m1 'recovering' | sed 's/^/   agent: /' || true
    # Before Install: the previous revision's files stay.
    check "$CUR" Failed || true
    if check_ok "$MK"; then pass; echo "   check of $CUR (still installed): $(brief "$MK")"; else fail "check after crash: $MK"; console_tail 40; fi
    deploy_and_check "$nxt" app && CUR=$nxt
    # (2) During the download of L: the download resumes.
    harness_send crash part 8000000
    deploy L
    if marker "seq=$HARNESS_SEQ " 600 && [[ $MK == *" killed "* ]]; then
        pass
        echo "   harness: ${MK#*seq=* }"
        if wait_dep 900 && [ "$OUT_STATUS" = Succeeded ]; then
            pass
            echo "   deployment $DEP: Succeeded after ${DEP_SECS}s; agent: $(agent_lines | grep -m1 'resumed at' || echo 'no resume line')"
        else
            fail "after a kill during DownloadBundle, expected Succeeded: $OUTCOME"
        fi
        check L Succeeded app || true
        if check_ok "$MK"; then pass; echo "   check: $(brief "$MK")"; CUR=L; else fail "check of L after crash: $MK"; console_tail 40; fi
    else
        fail "crash during the download: ${MK:-no result}"
        wait_dep 900 || true
    fi
    PREV_REV=L
    deploy_and_check "$(other "$CUR")" app && CUR=$PREV_REV
    # Clean shutdown: busybox init runs rcK, which stops the agent.
    ts=$(now_ms)
    harness poweroff || true
    if vm_wait_exit 60; then
        pass
        echo "   clean poweroff (init script stop) in $(secs_since "$ts")s"
    else
        fail "guest did not power off"
        vm_kill
    fi
    q=$(qcow2_check)
    [ "$q" = ok ] && pass || fail "qcow2 after clean poweroff: $q"
    echo "   crash part: $(secs_since "$t")s"
    T_CRASH=$(secs_since "$t")s
fi

# phase_at_cut FROM: where the deployment DEP was when the power was cut,
# from its lifecycle events on the server (which the cut does not touch)
# and, for DownloadBundle, the agent's log relayed on the console since
# line FROM (downloading until "downloaded ...", then unpacking).
phase_at_cut() {
    local st ev first name status prev=""
    st=$(fleet state "$DEP") || { echo "unknown"; return; }
    [[ $st == Succeeded* ]] && { echo "after the deployment"; return; }
    ev=${st#* }
    for first in ${ev//,/ }; do
        name=${first%%:*}
        status=${first#*:}
        if [ "$status" != Succeeded ]; then
            case $status in
            InProgress)
                if [ "$name" = DownloadBundle ]; then
                    if agent_lines "$1" | grep -q 'downloaded /'; then echo "DownloadBundle (unpacking)"; else echo "DownloadBundle (downloading)"; fi
                else
                    echo "$name"
                fi
                ;;
            Pending) if [ -z "$prev" ]; then echo "before pickup"; else echo "after $prev"; fi ;;
            *) echo "$name ($status)" ;;
            esac
            return
        fi
        prev=$name
    done
    echo "after the deployment"
}

# ---- (c) power cuts ----
if has_part cuts && [ "$cuts" -gt 0 ]; then
    t=$(now_ms)
    ensure_running cuts0
    if [ "$D_SWITCH" = 0 ]; then
        # Not measured (boot part skipped): measure a switch of revisions.
        deploy_and_check "$(other "$CUR")" && CUR=$PREV_REV
        deploy_and_check "$(other "$CUR")" && CUR=$PREV_REV
    fi
    if [ "$CUR" = L ]; then deploy_and_check A && CUR=A; fi
    span=$(awk -v d="$D_SWITCH" 'BEGIN { printf "%d", d * 1150 }')
    echo "== cuts: $cuts power cuts (kill -9 of qemu), cut i at a random instant of slice i of 0..$(awk -v s="$span" 'BEGIN{printf "%.1f", s/1000}')s after CreateDeployment (1.15 x ${D_SWITCH}s, the median of ${#switch_secs[@]} measured switches of revisions: ${switch_secs[*]})"
    cut_ok=0
    cut_fail=0
    declare -A by_phase=() by_outcome=() by_pair=()
    declare -a recover_secs=()
    for ((i = 1; i <= cuts; i++)); do
        vm_alive || boot_vm "cut$i-pre"
        nxt=$(other "$CUR")
        deploy "$nxt"
        from=$(wc -l <"$VM_LOG")
        # Stratified: cut i falls at a random instant of the i-th of
        # $cuts equal slices of the span, so the cuts cover it evenly.
        delay_ms=$(((i - 1) * span / cuts + (RANDOM * 32768 + RANDOM) % (span / cuts + 1)))
        while [ $(($(now_ms) - DEP_T0)) -lt "$delay_ms" ]; do sleep 0.01; done
        vm_kill
        at=$(secs_since "$DEP_T0")
        phase=$(phase_at_cut "$from")
        by_phase[$phase]=$((${by_phase[$phase]:-0} + 1))
        q=$(qcow2_check)
        [[ $q == ERRORS* ]] && fail "cut $i: qcow2 check: $q"
        desc=$(printf '%s->%s cut at %5.2fs (%s), qcow2 %s' "$CUR" "$nxt" "$at" "$phase" "$q")
        # Power back: the agent finishes (or reports) what the cut interrupted.
        boot_vm "cut$i"
        tb=$(now_ms)
        if ! wait_dep 600; then
            cut_fail=$((cut_fail + 1))
            fail "cut $i/$cuts $desc | the deployment did not end on the server: $OUTCOME"
            agent_lines | tail -n 20 | sed 's/^/    | /'
            vm_kill
            continue
        fi
        recover_secs+=("$(secs_since "$tb")")
        outcome=$OUT_STATUS
        [ "$OUT_STATUS" = Failed ] && outcome="Failed in $OUT_FAILED"
        by_outcome[$outcome]=$((${by_outcome[$outcome]:-0} + 1))
        by_pair["$phase -> $outcome"]=$((${by_pair["$phase -> $outcome"]:-0} + 1))
        cut_outcome=$OUTCOME
        cut_status=$OUT_STATUS
        cut_failed=$OUT_FAILED
        # The rule: Install succeeded -> the new revision's files; else the previous one's.
        want=$CUR
        [ "$OUT_STATUS" = Succeeded ] || [ "$OUT_INSTALLED" = yes ] && want=$nxt
        want_status=$OUT_STATUS
        # A deadline of the server (not the agent) ended it: the agent's own record may differ.
        [[ $OUTCOME == *"did not pick up"* || $OUTCOME == *"did not complete within"* ]] && want_status=any
        check "$want" "$want_status" || true
        r=$MK
        ok=1
        check_ok "$r" || ok=0
        note=""
        if [ "$OUT_STATUS" != Succeeded ]; then
            # Follow-up: the device must converge to nxt.
            if QUIET=1 deploy_and_check "$nxt"; then
                note="; follow-up $nxt Succeeded in ${DEP_SECS}s, checked"
            else
                ok=0
                note="; follow-up $nxt: $OUTCOME"
            fi
        fi
        CUR=$nxt
        if [ "$ok" = 1 ]; then
            cut_ok=$((cut_ok + 1))
            pass
            printf '   cut %3d/%d %s | %s%s; %s is installed: %s%s\n' "$i" "$cuts" "$desc" "$cut_status" \
                "$([ "$cut_status" = Failed ] && echo " in $cut_failed (${cut_outcome#*message=})")" "$want" "$(brief "$r")" "$note"
        else
            cut_fail=$((cut_fail + 1))
            fail "cut $i/$cuts $desc | $cut_outcome | check of $want: $r$note"
            { grep -a 'EDGEDEPLOY-DETAIL' "$VM_LOG" || true; } | tail -n 30 | tr -d '\r' | sed 's/^/    | /'
        fi
    done
    harness poweroff || true
    vm_wait_exit 60 || vm_kill
    echo "   cuts: $cut_ok ok, $cut_fail failed; time from power back to the deployment's end on the server: mean $(printf '%s\n' "${recover_secs[@]:-0}" | awk '{s += $1} END {printf "%.2f", NR ? s / NR : 0}')s"
    echo "   cuts by phase at the cut:"
    for k in "${!by_phase[@]}"; do printf '     %3d  %s\n' "${by_phase[$k]}" "$k"; done | sort -k2
    echo "   cuts by outcome on the server:"
    for k in "${!by_outcome[@]}"; do printf '     %3d  %s\n' "${by_outcome[$k]}" "$k"; done | sort -k2
    echo "   cuts by phase -> outcome:"
    for k in "${!by_pair[@]}"; do printf '     %3d  %s\n' "${by_pair[$k]}" "$k"; done | sort -k2
    echo "   cuts part: $(secs_since "$t")s"
    T_CUTS=$(secs_since "$t")s
fi

echo "== figures ($arch)"
echo "   boot to agent start, guest uptime (s): ${boot_start[*]:-n/a}"
echo "   qemu launch to the first PollHostCommand seen by the server, host wall (s): ${boot_poll[*]:-n/a}"
echo "   deployments, CreateDeployment to end, host wall (s): ${deploy_secs[*]:-n/a}"
echo "   agent VmHWM idle-polling: ${IDLE_HWM:-n/a} kB (VmRSS ${IDLE_RSS:-n/a} kB); after the 50 MB deployment: ${PEAK_HWM:-n/a} kB"
echo "   agent binary ($AGENT_TRIPLE, no TLS): $AGENT_SIZE bytes; kernel $KERNEL_PACKAGE"
echo "   time: boot ${T_BOOT:-(skipped)}, crash ${T_CRASH:-(skipped)}, cuts ${T_CUTS:-(skipped)}, total $(secs_since "$T_ALL")s"
echo "device-tests-$arch: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
