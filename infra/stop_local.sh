#!/usr/bin/env bash
# Stop the servers infra/start_local.sh started (their pids are in the state folder).
set -euo pipefail
state="${1:-.services}"
for name in mlflow prefect; do
  if [[ -f "$state/$name.pid" ]]; then
    pid="$(cat "$state/$name.pid")"
    # the server's own children (uvicorn workers) go with it
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    rm -f "$state/$name.pid"
  fi
done
