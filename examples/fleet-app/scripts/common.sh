# Shared by the hooks: where this agent's copy of the app lives.
APP_HOME="${EDGEDEPLOY_DEMO_HOME:-/opt/hello-fleet}"
HERE="$(cd "$(dirname "$0")" && pwd)"
