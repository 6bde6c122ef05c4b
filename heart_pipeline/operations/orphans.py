"""Worker processes that a killed CLI run left behind, found and stopped by the next run or `doctor`.

A SIGKILLed ``heart-pipeline train`` cannot stop its children: joblib's loky workers (CV folds), their
resource tracker and a local Dask cluster's workers keep running, about 260 MB, for as long as 44
minutes in the issue that found it. Nothing in loky watches its parent (its workers only end after an
idle timeout, and one busy with a fold does not). So each CLI run writes its identity (PID and start
time, which a reused PID cannot fake) into its environment, where every process it starts inherits it;
a process that carries the mark of a run that no longer exists is an orphan, and the next CLI run
(or ``heart-pipeline doctor``) stops it with psutil. Servers the CLI starts do not inherit the mark
(``stack._base_env`` removes it): they outlive the call on purpose.
"""

from __future__ import annotations

import contextlib
import os

import psutil

RUN_MARKER = "HEART_PIPELINE_CLI_RUN"  # "<pid>:<create time>" of the CLI process whose children carry it


def mark_this_process() -> None:
    """Every process started from now on carries this process's identity."""
    me = psutil.Process()
    os.environ[RUN_MARKER] = f"{me.pid}:{me.create_time()}"


def _run_alive(mark: str) -> bool:
    try:
        pid, created = mark.split(":")
        return bool(psutil.Process(int(pid)).create_time() == float(created))
    except (ValueError, psutil.Error):
        return False


def orphans() -> list[psutil.Process]:
    """Processes of this user that carry the mark of a CLI run that has ended."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            mark = process.environ().get(RUN_MARKER)
            if mark and not _run_alive(mark):
                found.append(process)
    return found


def describe(process: psutil.Process) -> str:
    """``pid N: <the start of its command line>``, e.g. ``pid 812: -m joblib.externals.loky.backend...``."""
    with contextlib.suppress(psutil.Error):
        return f"pid {process.pid}: {' '.join(process.cmdline()[1:])[:70]}"
    return f"pid {process.pid}"


def reap(grace: float = 5) -> list[str]:
    """Stop every orphan (SIGTERM, then SIGKILL after ``grace`` seconds); returns what was stopped."""
    found = orphans()
    stopped = []
    for process in found:
        with contextlib.suppress(psutil.Error):
            stopped.append(describe(process))
            process.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return stopped
