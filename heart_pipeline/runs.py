"""Per-run output folders: every flow run writes into its own folder, so runs never overwrite each other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path


def create_run_folder(runs_dir: Path, flow_name: str, run_id: str | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = (run_id or uuid.uuid4().hex)[:8]
    path = runs_dir / flow_name / f"{stamp}-{suffix}"
    path.mkdir(parents=True, exist_ok=False)
    return path
