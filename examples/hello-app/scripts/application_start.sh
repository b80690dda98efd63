#!/bin/sh
# ApplicationStart: start hello-app in the background, detached from this
# hook (own session, output to a log file), and wait for its pidfile.
set -eu
APP_DIR=/tmp/edgedeploy-example/hello-app
RUN_DIR=/tmp/edgedeploy-example/run
PIDFILE=$RUN_DIR/hello-app.pid
echo "$LIFECYCLE_EVENT of deployment $DEPLOYMENT_ID: starting hello-app"
mkdir -p "$RUN_DIR"

if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "hello-app is already running (pid $(cat "$PIDFILE")); stop it first with ApplicationStop"
    exit 1
fi
rm -f "$PIDFILE"

# stdin, stdout and stderr are redirected, so the app does not hold the
# hook's output open; setsid (util-linux or busybox) gives it its own session.
if command -v setsid >/dev/null 2>&1; then
    setsid "$APP_DIR/hello.sh" </dev/null >>"$RUN_DIR/hello-app.log" 2>&1 &
else
    "$APP_DIR/hello.sh" </dev/null >>"$RUN_DIR/hello-app.log" 2>&1 &
fi

# Wait up to 10 s, in tenths of a second where sleep takes fractions.
if sleep 0.1 2>/dev/null; then step=0.1 tries=100; else step=1 tries=10; fi
i=0
while [ ! -s "$PIDFILE" ]; do
    i=$((i + 1))
    if [ "$i" -gt "$tries" ]; then
        echo "hello-app wrote no pidfile within 10 s; its log:"
        tail -n 20 "$RUN_DIR/hello-app.log" || true
        exit 1
    fi
    sleep "$step"
done
echo "hello-app running, pid $(cat "$PIDFILE"), log $RUN_DIR/hello-app.log"
