#!/bin/sh
# hello-app: writes "<pid> <count> <epoch seconds> <message>" to the
# heartbeat file every HELLO_INTERVAL seconds until it gets SIGTERM.
RUN_DIR=${RUN_DIR:-/tmp/edgedeploy-example/run}
HELLO_MESSAGE="hello"
HELLO_INTERVAL=1
. "$(dirname "$0")/hello.conf"

mkdir -p "$RUN_DIR"
echo $$ > "$RUN_DIR/hello-app.pid.tmp" && mv -f "$RUN_DIR/hello-app.pid.tmp" "$RUN_DIR/hello-app.pid"
sleeper=
trap 'echo "hello-app: stopping (pid $$)"; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; rm -f "$RUN_DIR/hello-app.pid" "$RUN_DIR/heartbeat"; exit 0' TERM INT
echo "hello-app: started (pid $$), heartbeat every ${HELLO_INTERVAL}s in $RUN_DIR/heartbeat"

count=0
while :; do
    count=$((count + 1))
    echo "$$ $count $(date +%s) $HELLO_MESSAGE" > "$RUN_DIR/heartbeat.tmp"
    mv -f "$RUN_DIR/heartbeat.tmp" "$RUN_DIR/heartbeat"
    # sleep in the background and wait, so SIGTERM is handled at once
    sleep "$HELLO_INTERVAL" &
    sleeper=$!
    wait "$sleeper"
done
