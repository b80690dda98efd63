#!/bin/sh
set -e
. "$(dirname "$0")/common.sh"
# Detached, with its output in a file: a hook's background process must not
# hold the hook's stdout/stderr.
setsid "$APP_HOME/hello.sh" "$APP_HOME" > "$APP_HOME/app.log" 2>&1 < /dev/null &
echo $! > "$APP_HOME/app.pid"
echo "$LIFECYCLE_EVENT: started pid $(cat "$APP_HOME/app.pid")"
