#!/bin/sh
# BeforeInstall: prepare the runtime directory (kept outside the installed tree).
set -eu
RUN_DIR=/tmp/edgedeploy-example/run
echo "$LIFECYCLE_EVENT of deployment $DEPLOYMENT_ID ($APPLICATION_NAME, group $DEPLOYMENT_GROUP_NAME)"
mkdir -p "$RUN_DIR"
echo "runtime directory: $RUN_DIR"
