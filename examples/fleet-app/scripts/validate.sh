#!/bin/sh
. "$(dirname "$0")/common.sh"
# The heartbeat must advance within 5 seconds.
first="$(cat "$APP_HOME/heartbeat" 2>/dev/null || echo 0)"
for _ in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.5
    now="$(cat "$APP_HOME/heartbeat" 2>/dev/null || echo 0)"
    if [ "$now" -gt "$first" ]; then
        echo "$LIFECYCLE_EVENT: heartbeat $now, service is up"
        exit 0
    fi
done
echo "$LIFECYCLE_EVENT: heartbeat stuck at $first" >&2
exit 1
