#!/usr/bin/env bash
# Start a local MLflow server and/or Prefect server without containers, bound to 127.0.0.1 by default.
#
#   infra/start_local.sh [mlflow|prefect|all] [state-dir]     # default: all, .services
#   infra/stop_local.sh [state-dir]
#
# Settings come from the environment only (nothing secret is written here):
#   BLIP_HOST (127.0.0.1)  MLFLOW_PORT (5000)  PREFECT_PORT (4200)
#   MLFLOW_BACKEND_STORE_URI (sqlite:///<state>/mlflow.db; e.g. postgresql://user:$PGPASSWORD@db/mlflow)
#   MLFLOW_ARTIFACTS_DESTINATION (<state>/mlartifacts; e.g. s3://bucket/mlflow)
# Each server leads a process group of its own (setsid), so stop_local.sh stops it with all its workers;
# its pid (= the group id) goes to <state>/<name>.pid and its log to <state>/<name>.log. The script
# returns once each answers its health check (or fails, printing the log's tail).
set -euo pipefail

what="${1:-all}"
state="$(mkdir -p "${2:-.services}" && cd "${2:-.services}" && pwd)"
host="${BLIP_HOST:-127.0.0.1}"
bin="$(dirname "$(command -v python)")"

wait_for() {  # name url
  for _ in $(seq 1 180); do
    if python - "$2" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
    if ! kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; then break; fi
    sleep 1
  done
  echo "$1 did not come up; last lines of $state/$1.log:" >&2
  tail -n 30 "$state/$1.log" >&2
  return 1
}

if [[ "$what" == mlflow || "$what" == all ]]; then
  port="${MLFLOW_PORT:-5000}"
  setsid "$bin/mlflow" server --host "$host" --port "$port" --workers 1 \
    --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$state/mlflow.db}" \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$state/mlartifacts}" \
    >"$state/mlflow.log" 2>&1 &
  echo $! >"$state/mlflow.pid"
  wait_for mlflow "http://$host:$port/health"
  echo "MLflow UI: http://$host:$port  (export MLFLOW_TRACKING_URI=http://$host:$port)"
fi

if [[ "$what" == prefect || "$what" == all ]]; then
  port="${PREFECT_PORT:-4200}"
  PREFECT_HOME="$state/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
    setsid "$bin/prefect" server start --host "$host" --port "$port" >"$state/prefect.log" 2>&1 &
  echo $! >"$state/prefect.pid"
  wait_for prefect "http://$host:$port/api/health"
  echo "Prefect UI: http://$host:$port  (export PREFECT_API_URL=http://$host:$port/api)"
fi
