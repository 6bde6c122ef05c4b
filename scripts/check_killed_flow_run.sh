#!/usr/bin/env bash
# A flow-run process killed with SIGKILL must end Crashed (issue 12, "a killed flow-run process").
# Needs a running Prefect server with the zombie automation: `make up` creates it, then
#   source .prefect/stack/stack.env && scripts/check_killed_flow_run.sh [config.yaml]
# It starts `heart-pipeline train`, kills it with SIGKILL once training starts, and polls the flow
# run's state until it is Crashed (about 90-120 s: 30 s heartbeats, 90 s without one).
set -euo pipefail
: "${PREFECT_API_URL:?set PREFECT_API_URL (source .prefect/stack/stack.env)}"
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30
source "$(dirname "$0")/start_train.sh" "${1:-}"
kill -KILL "$PID"
KILLED_AT=$(date +%s)
echo "killed pid $PID (flow run $FLOW_RUN) with SIGKILL"
while true; do
  STATE=$("$BIN/python" - "$FLOW_RUN" <<'PY'
import sys
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(client.read_flow_run(sys.argv[1]).state.name)
PY
)
  ELAPSED=$(( $(date +%s) - KILLED_AT ))
  echo "after ${ELAPSED}s: $STATE"
  [ "$STATE" = "Crashed" ] && exit 0
  [ "$ELAPSED" -gt 300 ] && { echo "still $STATE after 300 s: is the zombie automation there?"; exit 1; }
  sleep 10
done
