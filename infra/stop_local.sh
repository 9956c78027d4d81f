#!/usr/bin/env bash
# Stop the servers infra/start_local.sh started: each one's whole process group (the server and its
# workers, which may ignore SIGTERM), SIGTERM first, SIGKILL after a grace period.
set -euo pipefail
state="${1:-.services}"
grace="${BLIP_STOP_GRACE:-15}"
alive() { kill -0 -- "-$1" 2>/dev/null; }
for name in mlflow prefect; do
  if [[ -f "$state/$name.pid" ]]; then
    group="$(cat "$state/$name.pid")"
    kill -TERM -- "-$group" 2>/dev/null || true
    for _ in $(seq 1 "$grace"); do alive "$group" || break; sleep 1; done
    if alive "$group"; then
      echo "$name: still running after ${grace}s, killing its process group" >&2
      kill -KILL -- "-$group" 2>/dev/null || true
    fi
    rm -f "$state/$name.pid"
  fi
done
