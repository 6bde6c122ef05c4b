#!/usr/bin/env bash
# `heart-pipeline train` stopped with SIGTERM mid-run must end cleanly (issue 12, "SIGTERM mid-run"):
# the process exits within seconds, its last stderr line says it was stopped, the flow run is Crashed or
# Cancelled (never left Running), and no MLflow run of it is left RUNNING.
#   scripts/check_sigterm.sh [config.yaml]      (uses PREFECT_API_URL if set, else the background server)
set -euo pipefail
source "$(dirname "$0")/start_train.sh" "${1:-}"
STOPPED_AT=$(date +%s.%N)
kill -TERM "$PID"
set +e
wait "$PID"
CODE=$?
set -e
echo "exit code $CODE after $(echo "$(date +%s.%N) - $STOPPED_AT" | bc) s"
echo "last line: $(tail -1 "$LOG")"
API_URL=$(grep -o "http://127.0.0.1:[0-9]*" "$LOG" | head -1)
STATE=$(PREFECT_API_URL="${PREFECT_API_URL:-$API_URL/api}" "$BIN/python" - "$FLOW_RUN" <<'PY'
import sys
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(client.read_flow_run(sys.argv[1]).state.name)
PY
)
echo "flow run $FLOW_RUN: $STATE"
case "$STATE" in Crashed|Cancelled) ;; *) echo "expected Crashed or Cancelled"; exit 1 ;; esac
tail -1 "$LOG" | grep -q "stopped by SIGTERM" || { echo "the last line does not say it was stopped"; exit 1; }
