# Host-side helpers of images/run-tests.sh: one QEMU guest at a time, its
# serial console in a log file, markers read from that log, the edgedeploy
# server and the test harness's HTTP server (both on loopback; the guest
# reaches them only through guestfwd).
# Source after cross/lib.sh; needs IMG (image dir), WORK (work dir),
# SERVER_PORT (the edgedeploy server's port on 127.0.0.1).

VM_PID=""      # qemu's pid (from -pidfile)
VM_WRAP=""     # pid of the `timeout` wrapping qemu
VM_LOG=""      # serial log of the current boot
VM_POS=0       # markers before this line of VM_LOG are consumed
VM_T0=0        # host time (ms) at launch
HTTPD_PID=""
HARNESS_SEQ=0

now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }

# shellcheck disable=SC1091
vm_load_conf() { . "$IMG/qemu.conf"; }

httpd_start() { # DIR
    rm -f "$WORK/httpd.port"
    python3 "$REPO/images/lib/httpd.py" "$1" "$WORK/httpd.port" &
    HTTPD_PID=$!
    local i=0
    while [ ! -s "$WORK/httpd.port" ]; do
        sleep 0.1
        i=$((i + 1))
        [ "$i" -lt 100 ] || die "test HTTP server did not start"
    done
    HTTPD_PORT=$(cat "$WORK/httpd.port")
}

httpd_stop() {
    if [ -n "$HTTPD_PID" ]; then
        kill "$HTTPD_PID" 2>/dev/null || true
        wait "$HTTPD_PID" 2>/dev/null || true
        HTTPD_PID=""
    fi
}

# serve NAME CONTENT: replace a served file atomically.
serve() {
    printf '%s\n' "$2" >"$SRV/.$1.tmp"
    mv -f "$SRV/.$1.tmp" "$SRV/$1"
}

# vm_start NAME DISK: boot the image with DISK as /dev/vda; serial console
# to $WORK/NAME.serial.log. Bounded by VM_TIMEOUT seconds (then KILL).
vm_start() {
    local name=$1 disk=$2
    VM_LOG=$WORK/$name.serial.log
    VM_POS=0
    : >"$VM_LOG"
    rm -f "$WORK/qemu.pid" "$WORK/$name.conns"
    # A fresh harness runs every command it finds once: leave it none.
    harness_send none
    VM_T0=$(now_ms)
    # Network: user mode, restricted (no route anywhere). In the guest,
    # 10.0.2.100:SERVER_PORT is the edgedeploy server and 10.0.2.101:80 the
    # test harness's server, both on this machine's loopback. Connections
    # to the edgedeploy server are logged (host ms) in $WORK/NAME.conns.
    # Disk: qcow2, writeback cache: the guest's flushes are honoured, and
    # killing qemu loses what the guest had not flushed.
    timeout -s KILL "${VM_TIMEOUT:-900}" "$QEMU" -M "$MACHINE" -cpu "$CPU" -m "${VM_MEM:-256}" -smp 1 \
        -nodefaults -display none -no-reboot -pidfile "$WORK/qemu.pid" \
        -kernel "$IMG/vmlinuz" -initrd "$IMG/initramfs.cpio.gz" \
        -append "console=ttyAMA0 quiet loglevel=3 panic=-1 edgedeploy.test=1" \
        -serial "file:$VM_LOG" \
        -drive "file=$disk,if=none,id=d0,format=qcow2,cache=writeback,discard=unmap" \
        -device virtio-blk-device,drive=d0 \
        -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:$SERVER_PORT-cmd:$REPO/images/lib/fwd.sh $WORK/$name.conns $SERVER_PORT,guestfwd=tcp:10.0.2.101:80-cmd:socat - TCP:127.0.0.1:$HTTPD_PORT" \
        -device virtio-net-device,netdev=n0 \
        -device virtio-rng-device \
        >"$WORK/$name.qemu.log" 2>&1 &
    VM_WRAP=$!
    local i=0
    while [ ! -s "$WORK/qemu.pid" ]; do
        sleep 0.05
        i=$((i + 1))
        if [ "$i" -gt 200 ] || ! kill -0 "$VM_WRAP" 2>/dev/null; then
            cat "$WORK/$name.qemu.log" >&2
            die "qemu did not start"
        fi
    done
    VM_PID=$(cat "$WORK/qemu.pid")
}

vm_alive() { [ -n "$VM_PID" ] && kill -0 "$VM_PID" 2>/dev/null; }

# vm_kill: power cut (SIGKILL to qemu), waits until it is gone.
vm_kill() {
    if [ -n "$VM_PID" ]; then kill -9 "$VM_PID" 2>/dev/null || true; fi
    vm_reap
}

vm_reap() {
    if [ -n "$VM_WRAP" ]; then wait "$VM_WRAP" 2>/dev/null || true; fi
    VM_WRAP=""
    VM_PID=""
}

# vm_wait_exit SECS: wait for qemu to exit by itself (guest poweroff).
vm_wait_exit() {
    local deadline=$(($(date +%s) + $1))
    while vm_alive; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
    vm_reap
}

# marker REGEX SECS: wait for the next console line (after VM_POS)
# containing REGEX; sets MK to it (from "EDGEDEPLOY-" on) and consumes it.
# Only complete lines count: QEMU writes the console byte by byte, and a
# line read before its end would be cut. Fails on timeout or when qemu
# died. (Sets globals: do not call it in $(...).)
MK=""
# marker_scan REGEX: the first complete line after VM_POS matching REGEX,
# as "<line number>\t<line>".
marker_scan() {
    local size complete=0
    size=$(stat -c %s "$VM_LOG")
    [ "$size" -gt 0 ] || return 0
    [ "$(head -c "$size" "$VM_LOG" | tail -c 1 | od -An -tx1 | tr -d ' ')" = 0a ] && complete=1
    head -c "$size" "$VM_LOG" | awk -v from="$VM_POS" -v re="$1" -v complete="$complete" '
        function chk(n, l) { if (n > from) { sub(/\r$/, "", l); if (l ~ re) { print n "\t" l; found = 1; exit } } }
        NR > 1 { chk(NR - 1, prev) }
        { prev = $0 }
        END { if (!found && NR > 0 && complete) chk(NR, prev) }'
}
marker() {
    local re=$1 deadline=$(($(date +%s) + $2)) hit
    MK=""
    while :; do
        hit=$(marker_scan "$re")
        if [ -z "$hit" ] && ! vm_alive; then
            # One more look: qemu may have written it just before exiting.
            hit=$(marker_scan "$re")
            if [ -z "$hit" ]; then
                echo "qemu exited while waiting for /$re/" >&2
                return 1
            fi
        fi
        if [ -n "$hit" ]; then
            VM_POS=${hit%%$'\t'*}
            hit=${hit#*$'\t'}
            MK="EDGEDEPLOY-${hit#*EDGEDEPLOY-}"
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "timeout after $2 s waiting for /$re/" >&2
            return 1
        fi
        sleep 0.05
    done
}

# field NAME LINE: value of NAME=value in a marker line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2" | head -n 1; }

# harness_send COMMAND...: send one command to the guest's test harness.
# harness COMMAND...: send it and wait (HARNESS_TIMEOUT s) for its result
# line, in MK. (Globals: do not call them in $(...).)
harness_send() {
    HARNESS_SEQ=$((HARNESS_SEQ + 1))
    serve harness "$HARNESS_SEQ $*"
}
harness() {
    harness_send "$@"
    marker "EDGEDEPLOY-RESULT seq=$HARNESS_SEQ " "${HARNESS_TIMEOUT:-600}"
}

# The console lines of the current boot since line FROM, for a report.
console_tail() { tail -n "${2:-40}" "$VM_LOG" | tr -d '\r' | sed 's/^/    | /'; }
