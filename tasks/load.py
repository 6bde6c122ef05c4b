"""Load step: write the bundled default data if absent, read the CSV, fingerprint it."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task

from heart_pipeline.caching import fingerprint_bytes
from heart_pipeline.config import Settings
from heart_pipeline.errors import DataError
from heart_pipeline.results import DatasetSummary
from heart_pipeline.runtime import retry_unless_pipeline_error

logger = logging.getLogger(__name__)

# scikit-lego's UCI copy codes these columns differently from the project's (Kaggle) file.
# The mappings were checked row by row against the original project's heart.csv.
SKLEGO_CP_TO_PROJECT = {1: 3, 2: 1, 3: 2, 4: 0}  # typical, atypical, non-anginal, asymptomatic
SKLEGO_SLOPE_TO_PROJECT = {1: 2, 2: 1, 3: 0}  # upsloping, flat, downsloping
SKLEGO_THAL_TO_PROJECT = {"fixed": 1, "normal": 2, "reversible": 3}
SKLEGO_SOURCE = "scikit-lego sklego.datasets.load_hearts (UCI Cleveland, bundled with the package)"


@dataclass(frozen=True)
class RawData:
    frame: pd.DataFrame
    source_lines: list[int]  # the file line of each row (header is line 1)
    fingerprint: str


@dataclass(frozen=True)
class Dataset:
    """The file's rows, read once per run, with where they came from."""

    raw: RawData
    path: str
    provenance: str

    @property
    def fingerprint(self) -> str:
        return self.raw.fingerprint

    @property
    def summary(self) -> DatasetSummary:
        frame = self.raw.frame
        return DatasetSummary(self.path, self.fingerprint, len(frame), frame.shape[1], self.provenance)


def translate_sklego_hearts(frame: pd.DataFrame) -> pd.DataFrame:
    """Recode scikit-lego's hearts frame into the project's codes.

    Codes outside the known mapping are kept, not guessed: text that is not a thal label
    becomes missing (the two malformed rows carry '1' and '2', which would otherwise pass as
    valid codes), so the data gate quarantines those rows instead of training on them.
    """
    out = frame.copy()
    out["cp"] = out["cp"].map(lambda v: SKLEGO_CP_TO_PROJECT.get(v, v))
    out["slope"] = out["slope"].map(lambda v: SKLEGO_SLOPE_TO_PROJECT.get(v, v))
    out["thal"] = out["thal"].map(SKLEGO_THAL_TO_PROJECT).astype("Int64")
    return out


def write_default_dataset(path: Path) -> str:
    """Write the bundled UCI copy to ``path`` in the project's coding; returns its provenance."""
    from sklego.datasets import load_hearts

    frame = translate_sklego_hearts(load_hearts(as_frame=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    malformed = int(frame["thal"].isna().sum())
    return f"{SKLEGO_SOURCE}; recoded cp, slope, thal; {malformed} malformed thal values written as missing"


def _line_of_byte(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def read_heart_csv(path: Path, na_values: list[str], max_file_mb: float) -> RawData:
    """Read a CSV with a one-line DataError for every way it can be unusable."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_file_mb:
        raise DataError(f"{path}: file is {size_mb:.1f} MB, above the {max_file_mb:g} MB limit (data.max_file_mb)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    try:
        text = data.decode("utf-8-sig")  # the original project's file starts with a BOM
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {_line_of_byte(data, exc.start)})"
        ) from None
    try:
        frame = pd.read_csv(io.StringIO(text), na_values=na_values, skipinitialspace=True)
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV: {' '.join(str(exc).split())}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file has no header or data") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    # pandas skips blank lines; map each row back to its line so messages point into the file.
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()][1:]
    if len(lines) != len(frame):
        lines = [i + 2 for i in range(len(frame))]
    return RawData(frame=frame, source_lines=lines, fingerprint=fingerprint_bytes(data))


def load_dataset(path: Path, na_values: list[str], max_file_mb: float, default_path: Path) -> Dataset:
    """Read the file once (writing the bundled default first if that is what is asked for and absent)."""
    provenance = f"user file {path}"
    if not path.exists() and path.resolve() == default_path.resolve():
        provenance = write_default_dataset(path)
        logger.info("Wrote %s from %s", path, provenance)
    elif path.resolve() == default_path.resolve():
        provenance = f"bundled default {path} (written earlier from {SKLEGO_SOURCE})"
    return Dataset(read_heart_csv(path, na_values, max_file_mb), str(path), provenance)


@task(name="load", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_pipeline_error)
def load_dataset_task(path: Path, settings: Settings) -> Dataset:
    from prefect import get_run_logger

    dataset = load_dataset(
        path, settings.data.na_values, settings.data.max_file_mb, settings.resolve(settings.data.path)
    )
    summary = dataset.summary
    get_run_logger().info(
        "Loaded %s: %d rows, %d columns, sha256 %s; provenance: %s",
        summary.path,
        summary.n_rows,
        summary.n_columns,
        summary.fingerprint[:12],
        summary.provenance,
    )
    return dataset
