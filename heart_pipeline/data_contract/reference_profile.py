"""Regenerate the committed reference profile from the bundled data:
``python -m heart_pipeline.data_contract.reference_profile`` (or ``make reference-profile``).

The profile (great_expectations/reference_profile.json) holds the bundled file's code and value
shares in the project's coding; the contract's shift and coding checks compare files with it.
Regenerate it whenever the bundled data or the codebook changes (a test fails until you do).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from heart_pipeline.config import Settings, load_codebook_for, load_config
from heart_pipeline.data_contract.importers import convert
from heart_pipeline.data_contract.meaning import build_reference_profile


def bundled_profile(settings: Settings) -> dict[str, Any]:
    """The profile of the bundled source file, converted by its importer into our coding."""
    source = settings.resolve(settings.data.bundled_source)
    book = load_codebook_for(settings)
    frame = convert(settings.data.bundled_format, source.read_bytes(), str(source), book).frame
    name = f"bundled {settings.data.bundled_source} ({settings.data.bundled_format} importer, {len(frame)} rows)"
    return build_reference_profile(frame, list(book.columns), name)


def profile_json(profile: dict[str, Any]) -> str:
    return json.dumps(profile, indent=2, sort_keys=True) + "\n"


def main() -> None:
    settings = load_config()
    path: Path = settings.resolve(settings.contract.reference_profile_path)  # the checkout's copy
    path.write_text(profile_json(bundled_profile(settings)), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
