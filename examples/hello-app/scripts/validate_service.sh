#!/bin/sh
# ValidateService: hello-app is alive and its heartbeat advances.
set -eu
RUN_DIR=/tmp/edgedeploy-example/run
PIDFILE=$RUN_DIR/hello-app.pid
HEARTBEAT=$RUN_DIR/heartbeat
echo "$LIFECYCLE_EVENT of deployment $DEPLOYMENT_ID: checking hello-app"

beat() {
    if [ -s "$HEARTBEAT" ]; then
        cut -d ' ' -f 2 "$HEARTBEAT"
    else
        echo 0
    fi
}

pid=$(cat "$PIDFILE" 2>/dev/null || true)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "hello-app is not running (pidfile $PIDFILE: '${pid}')"
    exit 1
fi
first=$(beat)
i=0
while [ "$(beat)" -le "$first" ]; do
    i=$((i + 1))
    if [ "$i" -gt 5 ]; then
        echo "heartbeat did not advance in 5 s (count $first)"
        exit 1
    fi
    sleep 1
done
echo "heartbeat advanced from $first to $(beat): $(cat "$HEARTBEAT")"
