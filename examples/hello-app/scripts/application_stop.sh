#!/bin/sh
# ApplicationStop: stop hello-app via its pidfile (nothing to do if it is not running).
# Can also be run by hand: sh examples/hello-app/scripts/application_stop.sh
RUN_DIR=/tmp/edgedeploy-example/run
PIDFILE=$RUN_DIR/hello-app.pid
echo "${LIFECYCLE_EVENT:-manual stop} of deployment ${DEPLOYMENT_ID:-none}: stopping hello-app"

if [ ! -s "$PIDFILE" ]; then
    echo "no pidfile $PIDFILE: hello-app is not running"
    exit 0
fi
pid=$(cat "$PIDFILE")
if ! kill -0 "$pid" 2>/dev/null; then
    echo "pid $pid from $PIDFILE is not running; removing the stale pidfile"
    rm -f "$PIDFILE"
    exit 0
fi
echo "sending SIGTERM to pid $pid"
kill "$pid"
# hello-app removes its pidfile as it exits (its parent may be slow to reap
# it, so kill -0 alone can see it for a while). Wait up to 10 s, in tenths
# of a second where sleep takes fractions.
if sleep 0.1 2>/dev/null; then step=0.1 tries=100; else step=1 tries=10; fi
i=0
while [ -e "$PIDFILE" ] && kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt "$tries" ]; then
        echo "pid $pid still running after 10 s; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null
        break
    fi
    sleep "$step"
done
rm -f "$PIDFILE"
echo "hello-app stopped"
