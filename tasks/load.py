"""Load step: convert the bundled default data if absent, read the file once, fingerprint the same bytes.

The bytes are read once (heart_pipeline.data_contract.files: regular files only, within data.max_memory_mb),
parsed from memory (heart_pipeline.data_contract.reading: CSV or Parquet, within data.max_rows) and hashed, so
the fingerprint in tags, cache keys and run records is the fingerprint of exactly what was validated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from prefect import task

from heart_pipeline.caching import fingerprint_bytes
from heart_pipeline.config import DataConfig, Settings, load_codebook_for
from heart_pipeline.data_contract.codebook import placeholders_to_missing
from heart_pipeline.data_contract.files import read_input_bytes
from heart_pipeline.data_contract.importers import convert_bundled_default, converted_with, describe_provenance
from heart_pipeline.data_contract.reading import declare_disease_label, parse_heart_table
from heart_pipeline.operations.runtime import retry_unless_pipeline_error
from heart_pipeline.results import DatasetSummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawData:
    frame: pd.DataFrame
    source_lines: list[int]  # the file line of each row (header is line 1); Parquet: the row number
    fingerprint: str


@dataclass(frozen=True)
class Dataset:
    """The file's rows, read once per run, with where they came from."""

    raw: RawData
    path: str
    provenance: str
    disease_label: int = 1  # the file's own code for disease, as declared (data.disease_label)
    # Cells read as missing because the codebook declares their value a "not measured" placeholder
    # (scoring and external validation; training reads the file as it is).
    placeholders_read_as_missing: dict[str, int] = field(default_factory=dict)
    # The importer that wrote exactly these bytes (its provenance sidecar matches), else None.
    converted_with: str | None = None

    @property
    def fingerprint(self) -> str:
        return self.raw.fingerprint

    @property
    def identity(self) -> str:
        """The rows as this run reads them: the same bytes with another declared label, or with
        placeholders read as missing, are other data."""
        placeholders = f":not_measured={sorted(self.placeholders_read_as_missing.items())}"
        return f"{self.fingerprint}:disease_label={self.disease_label}" + (
            placeholders if self.placeholders_read_as_missing else ""
        )

    @property
    def summary(self) -> DatasetSummary:
        frame = self.raw.frame
        return DatasetSummary(self.path, self.fingerprint, len(frame), frame.shape[1], self.provenance)


def read_heart_csv(path: Path, data: DataConfig, columns: list[str]) -> RawData:
    """Read a CSV or Parquet file with a one-line DataError for every way it can be unusable; the
    target is recoded to 1 = disease when the file declares another coding (data.disease_label)."""
    budget = data.max_memory_mb * 2**20
    content = read_input_bytes(path, budget, "data.max_memory_mb")
    parsed = parse_heart_table(content, str(path), data.na_values, columns, data.max_rows, budget)
    if parsed.cells_truncated:
        logger.warning("%s: %d over-long cell(s) cut to a bounded length", path, parsed.cells_truncated)
    frame = declare_disease_label(parsed.frame, data.target, data.disease_label)
    return RawData(frame=frame, source_lines=parsed.source_lines, fingerprint=fingerprint_bytes(content))


def write_default_dataset(path: Path, settings: Settings) -> str:
    """Convert the bundled data (data.bundled_source, by its importer) into ``path``; returns its provenance."""
    source = settings.resolve_resource(settings.data.bundled_source)
    budget = settings.data.max_memory_mb * 2**20
    return convert_bundled_default(source, settings.data.bundled_format, path, load_codebook_for(settings), budget)


def load_dataset(path: Path, settings: Settings, columns: list[str]) -> Dataset:
    """Read the file once (converting the bundled default first if that is what is asked for and absent)."""
    if not path.exists() and path.resolve() == settings.resolve(settings.data.path).resolve():
        logger.info("Wrote %s: %s", path, write_default_dataset(path, settings))
    raw = read_heart_csv(path, settings.data, columns)
    provenance = describe_provenance(path, raw.fingerprint)
    if settings.data.disease_label != 1:
        provenance += f"; target recoded: the file's {settings.data.disease_label} means disease (data.disease_label)"
    importer = converted_with(path, raw.fingerprint)
    return Dataset(raw, str(path), provenance, settings.data.disease_label, converted_with=importer)


def read_placeholders_as_missing(dataset: Dataset, not_measured: dict[str, list[float]]) -> Dataset:
    """The dataset with the codebook's "not measured" placeholders (chol 0) read as missing: for rows
    a fitted model scores, whose imputers fill them."""
    frame, counts = placeholders_to_missing(dataset.raw.frame, not_measured)
    if not counts:
        return dataset
    return replace(dataset, raw=replace(dataset.raw, frame=frame), placeholders_read_as_missing=counts)


def split_off_column(dataset: Dataset, column: str) -> tuple[Dataset, pd.Series | None]:
    """The dataset without an optional extra ``column`` (a site name), and that column indexed by
    file line (the index the gate's kept rows carry); None when the file has no such column."""
    frame = dataset.raw.frame
    if column not in frame.columns:
        return dataset, None
    values = pd.Series(frame[column].to_numpy(dtype=object), index=pd.Index(dataset.raw.source_lines), name=column)
    return replace(dataset, raw=replace(dataset.raw, frame=frame.drop(columns=[column]))), values


@task(name="load", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_pipeline_error)
def load_dataset_task(path: Path, settings: Settings, columns: list[str]) -> Dataset:
    """The file for training and the data-quality check; a site column (evaluation.site_column, as
    `convert --from uci-text` writes) is set aside: it names where a row came from, not a feature."""
    from prefect import get_run_logger

    dataset, sites = split_off_column(load_dataset(path, settings, columns), settings.evaluation.site_column)
    summary = dataset.summary
    get_run_logger().info(
        "Loaded %s: %d rows, %d columns, sha256 %s; provenance: %s%s",
        summary.path,
        summary.n_rows,
        summary.n_columns,
        summary.fingerprint[:12],
        summary.provenance,
        "" if sites is None else f"; site column set aside ({sites.nunique()} sites)",
    )
    return dataset
