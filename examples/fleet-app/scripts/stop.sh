#!/bin/sh
. "$(dirname "$0")/common.sh"
echo "$LIFECYCLE_EVENT: stopping hello-fleet in $APP_HOME"
if [ -f "$APP_HOME/app.pid" ]; then
    kill "$(cat "$APP_HOME/app.pid")" 2>/dev/null || true
    rm -f "$APP_HOME/app.pid"
fi
