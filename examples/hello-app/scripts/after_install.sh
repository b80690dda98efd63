#!/bin/sh
# AfterInstall: check what Install put in place and record the deployment id.
set -eu
APP_DIR=/tmp/edgedeploy-example/hello-app
RUN_DIR=/tmp/edgedeploy-example/run
echo "$LIFECYCLE_EVENT of deployment $DEPLOYMENT_ID"
for f in hello.sh hello.conf; do
    if [ ! -f "$APP_DIR/$f" ]; then
        echo "missing $APP_DIR/$f"
        exit 1
    fi
done
if [ ! -x "$APP_DIR/hello.sh" ]; then
    echo "$APP_DIR/hello.sh is not executable (the appspec's permissions set mode 755)"
    exit 1
fi
ls -l "$APP_DIR"
echo "$DEPLOYMENT_ID" > "$RUN_DIR/deployment-id"
