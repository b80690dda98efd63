#!/bin/sh
set -e
. "$(dirname "$0")/common.sh"
cp "$HERE/../app/hello.sh" "$APP_HOME/hello.sh.new"
chmod 755 "$APP_HOME/hello.sh.new"
mv "$APP_HOME/hello.sh.new" "$APP_HOME/hello.sh"
echo "$DEPLOYMENT_ID" > "$APP_HOME/revision"
echo "$LIFECYCLE_EVENT: installed into $APP_HOME"
