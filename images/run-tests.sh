#!/usr/bin/env bash
# Device-level tests of edgedeploy-agent in a QEMU guest (busybox init, the
# init script, the agent on a persistent ext4 qcow2 disk).
#
#   images/run-tests.sh arm64|armhf [--cuts N] [--parts boot,crash,cuts]
#                       [--seed S] [--no-build] [--no-install]
#
# Parts, in this order, on one data disk:
#   boot   boot; the init script starts the agent; deployments A, then B,
#          then A (hooks start a heartbeat app, checked running); measures
#          boot-to-agent-start, deployment times and the agent's VmHWM
#   crash  kill -9 of the agent process alone, inside the guest, in the
#          middle of a deployment: the init script starts it again, and the
#          next deploy-local recovers and succeeds; then a clean poweroff
#          (the init script's stop)
#   cuts   N power cuts (default 20; 200 for the long mode): boot, let the
#          device converge, verify it, ask for the other revision, kill -9
#          qemu at a random instant of that deployment (cut i in slice i
#          of N of 1.1x a measured deployment: download, unpack, install,
#          hooks, a few after the end), boot
#          again: the device finishes the interrupted deployment and the
#          guest verifies the result (status, sha256 of every file against
#          the revision's manifest, no extra files or directories, every
#          path in the cleanup list, no temporaries or partial archives)
#
# One line per cut; exit status 0 when every check passed. Builds the
# image first (images/build.sh) unless --no-build. Logs (serial consoles)
# in target/images/ARCH/test-logs/. Needs root for apt (qemu-system-arm,
# qemu-utils, socat, e2fsprogs, python3), or those installed.
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
IMG=${IMAGES_OUT:-$REPO/target/images}/$arch
if [ "$build" = 1 ] || [ ! -f "$IMG/initramfs.cpio.gz" ]; then
    b=(); [ "$install" = 1 ] || b=(--no-install)
    "$here/build.sh" "$arch" "${b[@]}"
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

cleanup() {
    local st=$?
    vm_alive && kill -9 "$VM_PID" 2>/dev/null
    vm_reap 2>/dev/null || true
    httpd_stop
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
# check_line LABEL RESULTLINE: a harness check result; counts and prints.
check_ok() { [[ $1 == *" ok "* ]]; }
# brief RESULTLINE: the check's verdict without the bookkeeping fields.
brief() { sed 's/^EDGEDEPLOY-RESULT seq=[0-9]* check //; s/ exit=[0-9]*//; s/ uptime=[0-9.]*//' <<<"$1"; }

T_ALL=$(now_ms)
echo "== device tests: $arch ($QEMU -M $MACHINE -cpu $CPU), kernel $KERNEL_VERSION, seed $seed"

# ---- revisions and server ----
revs=$EDGEDEPLOY_CACHE/revisions/${REV_FILES:-400}-${REV_BYTES:-5000000}
if [ ! -s "$revs/revisions.txt" ]; then
    # (Two runs may do this at once: each in its own temp dir; one wins.)
    python3 "$here/lib/gen-revisions.py" "$revs.tmp.$$" --files "${REV_FILES:-400}" --bytes "${REV_BYTES:-5000000}" >&2
    mkdir -p "$(dirname "$revs")"
    mv -T "$revs.tmp.$$" "$revs" 2>/dev/null || rm -rf "$revs.tmp.$$"
fi
cp -r "$revs/bundles" "$revs/manifests" "$SRV/"
for r in A B; do
    echo "   revision $r: $(wc -l <"$revs/manifests/$r.sha256") files, bundle $(stat -c %s "$revs/bundles/$r.tgz") bytes"
done
rev_line() { grep "^$1 " "$revs/revisions.txt"; }
want() { serve desired "$(rev_line "$1")"; }
other() { if [ "$1" = A ]; then echo B; else echo A; fi; }
serve harness "0 none"
httpd_start "$SRV"

# ---- data disk: ext4 made on the host, converted to qcow2 ----
DISK=$WORK/data.qcow2
truncate -s 384M "$WORK/data.raw"
mkfs.ext4 -q -F -L edgedata "$WORK/data.raw"
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

D_MAX=0       # longest full deployment (fetch-start to deploy-end), guest seconds
D_SWITCH=0    # shortest deployment that replaced another revision (the cuts'
              # kind): the least disturbed by other load on the machine
HWM_MAX=0
declare -a boot_agent=() deploy_secs=()
# note_deploy DEPLOY_END_LINE FETCH_START_UPTIME: sets d, secs, hwm and
# the maxima.
note_deploy() {
    local up
    secs=$(field secs "$1")
    hwm=$(field vmhwm_kb "$1")
    up=$(field uptime "$1")
    d=$(awk -v a="$2" -v b="$up" 'BEGIN { printf "%.2f", b - a }')
    deploy_secs+=("$d")
    if awk -v a="$d" -v b="$D_MAX" 'BEGIN { exit !(a > b) }'; then D_MAX=$d; fi
    # Every deployment after the first of a run replaces a revision.
    if [ "${#deploy_secs[@]}" -gt 1 ] && awk -v a="$d" -v b="$D_SWITCH" 'BEGIN { exit !(b == 0 || a < b) }'; then D_SWITCH=$d; fi
    if [ "${hwm:-0}" -gt "$HWM_MAX" ]; then HWM_MAX=$hwm; fi
}

# deploy_and_check REV [app]: the device is told REV; waits for the
# deployment and checks it. Prints a summary.
deploy_and_check() {
    local rev=$1 app=${2:-} fs de r
    want "$rev"
    marker "fetch-start rev=$rev" 120 || return 1
    fs=$MK
    marker "deploy-end rev=$rev" 600 || return 1
    de=$MK
    note_deploy "$de" "$(field uptime "$fs")"
    if [ "$(field status "$de")" != 0 ]; then
        fail "deployment of $rev: $de"
        console_tail
        return 1
    fi
    harness check "$rev" $app || return 1
    r=$MK
    if check_ok "$r"; then
        pass
        echo "   deploy $rev: ok in ${d}s (deploy-local ${secs}s, agent VmHWM ${hwm} kB); check: $(brief "$r")"
    else
        fail "check of $rev: $r"
        console_tail 60
        return 1
    fi
}

# ---- (a) boot ----
if has_part boot; then
    t=$(now_ms)
    echo "== boot: init script starts the agent, deployments A, B, A with hooks"
    want A
    vm_start boot "$DISK"
    marker "agent-start" 120 || { console_tail; die "agent did not start"; }
    m=$MK
    host_boot=$(secs_since "$VM_T0")
    guest_boot=$(field uptime "$m")
    boot_agent+=("$guest_boot/$host_boot")
    echo "   agent started by the init script: ${guest_boot}s after kernel start (guest uptime), ${host_boot}s after qemu launch"
    pass
    for r in A B A; do
        deploy_and_check "$r" app || true
    done
    echo "   boot part: $(secs_since "$t")s"
    T_BOOT=$(secs_since "$t")s
fi

# ---- (c) agent crash ----
if has_part crash; then
    t=$(now_ms)
    echo "== crash: kill -9 of the agent alone during a deployment; the init script respawns it"
    if ! vm_alive; then
        want A
        vm_start crash "$DISK"
        marker "idle rev=" 600 || die "device did not become idle"
    fi
    cur=$(tr -d '\r' <"$VM_LOG" | sed -n 's/.*idle rev=\([AB]\).*/\1/p' | tail -n 1)
    cur=${cur:-A}
    nxt=$(other "$cur")
    # Somewhere in the middle of deploy-local (D_SWITCH when measured).
    dmax=${D_SWITCH%.*}
    [ "${dmax:-0}" -ge 2 ] || dmax=4
    delay=$(awk -v r="$RANDOM" -v d="$dmax" 'BEGIN { printf "%.1f", 0.2 + (r % 1000) / 1000 * d * 0.6 }')
    harness_send crash "$delay"
    want "$nxt"
    marker "seq=$HARNESS_SEQ " 300 || die "no crash result"
    r=$MK
    echo "   harness: ${r#*seq=* }"
    if [[ $r == *" killed "* ]]; then pass; else fail "crash: $r"; fi
    if marker "agent-exit" 60; then
        echo "   the init script saw the agent exit: status $(field status "$MK")"
    else
        fail "no agent-exit from the init script"
    fi
    st=""
    if marker "agent-start" 60; then
        st=$MK
        echo "   the init script started it again: start $(field start "$st"), pid $(field pid "$st")"
    else
        fail "the agent was not started again"
    fi
    if [ "$(field start "$st")" = 2 ]; then pass; else fail "agent start count '$(field start "$st")', expected 2"; fi
    marker "deploy-end rev=$nxt" 600 || die "no deployment after the respawn"
    de=$MK
    if [ "$(field status "$de")" = 0 ]; then
        pass
        echo "   deploy-local after the respawn: status 0 in $(field secs "$de")s"
    else
        fail "deploy after respawn: $de"
    fi
    harness check "$nxt" app || die "no check result"
    r=$MK
    if check_ok "$r"; then pass; echo "   check: $(brief "$r")"; else fail "check after crash: $r"; console_tail 60; fi
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

# ---- (b) power cuts ----
if has_part cuts && [ "$cuts" -gt 0 ]; then
    t=$(now_ms)
    vm_alive && vm_kill
    if [ "$D_SWITCH" = 0 ]; then
        # Not measured (boot part skipped): measure a switch of revisions.
        want A
        vm_start measure "$DISK"
        cur=$(sed -n 's/^\([AB]\) .*/\1/p' "$SRV/desired")
        marker "idle rev=$cur" 600 || die "device did not become idle"
        deploy_and_check "$(other "$cur")" || die "measuring deployment failed"
        deploy_and_check "$cur" || die "measuring deployment failed"
        harness poweroff || true
        vm_wait_exit 60 || vm_kill
    fi
    span=$(awk -v d="$D_SWITCH" 'BEGIN { printf "%d", d * 1100 }')
    echo "== cuts: $cuts power cuts (kill -9 of qemu), cut i at a random instant of slice i of 0..$(awk -v s="$span" 'BEGIN{printf "%.1f", s/1000}')s after the deployment starts (1.1 x ${D_SWITCH}s, the shortest measured switch of revisions)"
    # The revision the device must end up with: the one the server wants.
    cur=$(sed -n 's/^\([AB]\) .*/\1/p' "$SRV/desired")
    cut_ok=0
    cut_fail=0
    prev_desc=""
    declare -a recover_secs=()
    for ((i = 1; i <= cuts + 1; i++)); do
        vm_start "cut$i" "$DISK"
        ts=$(now_ms)
        # The device converges: it finishes what the cut interrupted.
        rec=""
        if ! marker "idle rev=$cur" 600; then
            fail "cut $((i - 1)): device did not reach revision $cur after reboot"
            console_tail 60
            cut_fail=$((cut_fail + 1))
            vm_kill
            continue
        fi
        if de=$(awk -v from=0 '/deploy-end rev=/ { l = $0 } END { print l }' "$VM_LOG" | tr -d '\r') && [ -n "$de" ]; then
            rec="redeployed in $(field secs "EDGEDEPLOY-${de#*EDGEDEPLOY-}")s"
            recover_secs+=("$(field secs "EDGEDEPLOY-${de#*EDGEDEPLOY-}")")
        else
            rec="nothing to redo"
        fi
        if harness check "$cur"; then r=$MK; else r="check: no result"; fi
        if [ "$i" -gt 1 ]; then
            if check_ok "$r"; then
                cut_ok=$((cut_ok + 1))
                pass
                printf '   cut %3d/%d %s | reboot: %s; %s\n' "$((i - 1))" "$cuts" "$prev_desc" "$rec" "$(brief "$r")"
            else
                cut_fail=$((cut_fail + 1))
                fail "cut $((i - 1))/$cuts $prev_desc | reboot: $rec; $r"
                grep -a 'EDGEDEPLOY-DETAIL' "$VM_LOG" | tail -n 30 | tr -d '\r' | sed 's/^/    | /'
            fi
        elif ! check_ok "$r"; then
            fail "baseline before the cuts: $r"
        fi
        [ "$i" -le "$cuts" ] || break
        # Ask for the other revision, and cut the power during its deployment.
        nxt=$(other "$cur")
        want "$nxt"
        marker "fetch-start rev=$nxt" 120 || { fail "cut $i: deployment did not start"; vm_kill; continue; }
        t_fs=$(now_ms)
        from=$VM_POS
        # Stratified: cut i falls at a random instant of the i-th of
        # $cuts equal slices of the span, so the cuts cover it evenly.
        delay_ms=$(((i - 1) * span / cuts + (RANDOM * 32768 + RANDOM) % (span / cuts + 1)))
        while [ $(($(now_ms) - t_fs)) -lt "$delay_ms" ]; do sleep 0.01; done
        vm_kill
        at=$(secs_since "$t_fs")
        last=$(awk -v from="$from" 'NR > from && /EDGEDEPLOY-/ { l = $0 } END { print l }' "$VM_LOG" | tr -d '\r')
        case $last in
        *deploy-end* | *idle\ rev=*) phase="after the deployment" ;;
        *EDGEDEPLOY-EVENT\ Deployment*) phase="deploy-local started" ;;
        *EDGEDEPLOY-EVENT*) phase="after $(awk '{print $1}' <<<"${last#*EDGEDEPLOY-EVENT}")" ;;
        *deploy-start*) phase="deploy-local started" ;;
        *) phase="downloading" ;;
        esac
        q=$(qcow2_check)
        [[ $q == ERRORS* ]] && fail "cut $i: qcow2 check: $q"
        prev_desc=$(printf '%s->%s cut at %5.2fs (%s), qcow2 %s' "$cur" "$nxt" "$at" "$phase" "$q")
        cur=$nxt
    done
    harness poweroff || true
    vm_wait_exit 60 || vm_kill
    echo "   cuts: $cut_ok ok, $cut_fail failed; recovery deployments: ${#recover_secs[@]} (mean $(printf '%s\n' "${recover_secs[@]:-0}" | awk '{s += $1} END {printf "%.2f", NR ? s / NR : 0}')s)"
    echo "   cuts part: $(secs_since "$t")s"
    T_CUTS=$(secs_since "$t")s
fi

echo "== figures ($arch)"
echo "   boot to agent start (guest uptime / host wall): ${boot_agent[*]:-n/a} s"
echo "   full deployment (fetch + deploy-local), guest s: ${deploy_secs[*]:-n/a}"
echo "   agent VmHWM during deployments: max ${HWM_MAX} kB"
echo "   agent binary ($AGENT_TRIPLE, no TLS): $AGENT_SIZE bytes; kernel $KERNEL_PACKAGE"
echo "   time: boot ${T_BOOT:-(skipped)}, crash ${T_CRASH:-(skipped)}, cuts ${T_CUTS:-(skipped)}, total $(secs_since "$T_ALL")s"
echo "device-tests-$arch: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
