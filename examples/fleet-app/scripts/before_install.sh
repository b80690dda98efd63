#!/bin/sh
set -e
. "$(dirname "$0")/common.sh"
echo "$LIFECYCLE_EVENT: deployment $DEPLOYMENT_ID of $APPLICATION_NAME to $DEPLOYMENT_GROUP_NAME"
mkdir -p "$APP_HOME"
