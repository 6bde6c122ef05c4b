"""The background Prefect server's launcher: runs ``prefect server start`` as its child and ends it when
nobody needs it any more.

The CLI records this process (its PID and the project's marker variable); the server is its child in
the same session, so stopping the recorded process tree stops both. Every ``check_seconds`` it ends
the server, and itself, when:

- the server's home is gone (the checkout was deleted, or ``make clean`` removed ``.prefect/``);
- its environment is gone (the venv's python or the ``prefect`` executable was deleted);
- it has been idle for ``idle_minutes``.

Idle means: no flow run is active (Prefect's own count of RUNNING, PENDING and CANCELLING runs, asked
through ``/api/flow_runs/count``) and no CLI call has used the server (each call stamps
``last_used`` in the server's record, under the start lock) for that long. Both signals are
read from sources that exist for another reason: the run states are what the server is for, and
the record is what every caller reads anyway. A log's growth is not used: the server logs at
warning level, so a busy server can write nothing for an hour. The clock starts once the server
first answers, so a slow start-up is never mistaken for idleness.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIVE_STATES = ["RUNNING", "PENDING", "CANCELLING"]


@dataclass(frozen=True)
class Watch:
    home: Path
    record: Path  # server.json, with the last_used stamp of CLI calls
    api_url: str
    idle_seconds: float
    required: tuple[Path, ...]  # the python and the prefect executable the server runs on


def _post_json(url: str, body: dict[str, Any], timeout: float = 5) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def active_flow_runs(api_url: str) -> int | None:
    """How many flow runs the server counts as active; None when it does not answer."""
    body: dict[str, Any] = {"flow_runs": {"state": {"type": {"any_": ACTIVE_STATES}}}}
    try:
        return int(_post_json(f"{api_url}/flow_runs/count", body))
    except (urllib.error.URLError, OSError, ValueError, TypeError):
        return None


def last_used(record: Path) -> float:
    try:
        return float(json.loads(record.read_text())["last_used"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def reason_to_end(watch: Watch, last_activity: float, now: float) -> str | None:
    """Why the server should end now, or None."""
    if not watch.home.is_dir():
        return f"its home {watch.home} is gone"
    missing = [str(path) for path in watch.required if not path.exists()]
    if missing:
        return f"its environment is gone ({', '.join(missing)} missing)"
    idle = now - max(last_activity, last_used(watch.record))
    if idle >= watch.idle_seconds:
        return f"idle for {idle / 60:.1f} min (prefect.background_server_idle_minutes: {watch.idle_seconds / 60:g})"
    return None


def _end(server: subprocess.Popen[bytes], grace: float = 15) -> None:
    server.terminate()
    try:
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def watch_server(watch: Watch, command: list[str], check_seconds: float) -> int:
    """Run the server until it exits, is told to stop (SIGTERM, SIGINT), or ``reason_to_end`` says so."""
    server = subprocess.Popen(command)
    # Only pass the signal on: the loop below returns once the server has exited (waiting inside a
    # handler could deadlock on Popen's wait lock); `stop` SIGKILLs the tree if it does not.
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    signal.signal(signal.SIGINT, lambda *_: server.terminate())
    answered = False
    last_activity = time.time()
    while True:
        try:
            return server.wait(timeout=check_seconds)
        except subprocess.TimeoutExpired:
            pass
        active = active_flow_runs(watch.api_url)
        answered = answered or active is not None
        if not answered or active:
            last_activity = time.time()  # still starting, or working
        if reason := reason_to_end(watch, last_activity, time.time()):
            print(f"heart-pipeline: ending the background Prefect server: {reason}", file=sys.stderr, flush=True)
            _end(server)
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--idle-minutes", type=float, required=True)
    parser.add_argument("--check-seconds", type=float, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- prefect server start ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    required = (Path(sys.executable), Path(command[0]))
    watch = Watch(args.home, args.home / "server.json", args.api_url, args.idle_minutes * 60, required)
    return watch_server(watch, command, args.check_seconds)


if __name__ == "__main__":
    sys.exit(main())
