# Sourced by the fault checks: start `heart-pipeline train` in the background and wait until a model is
# training. Sets BIN, LOG (its stderr), PID and FLOW_RUN. Argument: an optional config file.
BIN="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin"
LOG="$(mktemp)"
"$BIN/heart-pipeline" train ${1:+--config "$1"} 2>"$LOG" >/dev/null &
PID=$!
until grep -q "Task run 'train-" "$LOG"; do
  kill -0 "$PID" 2>/dev/null || { echo "train ended before the fault could be injected:"; tail -3 "$LOG"; exit 1; }
  sleep 0.5
done
FLOW_RUN=$(grep -o "flow-run/[0-9a-f-]\{36\}" "$LOG" | head -1 | cut -d/ -f2)
