"""The codebook (great_expectations/codebook.yaml), read as typed plain data.

The codebook holds the meaning of every code of every coded column in the project's coding, the
label definition, and the known foreign codings (UCI's original codes, the Kaggle export) with
their mapping to ours. Checks, importers, the CLI and the API read it from here, so a meaning is
written once. No Great Expectations import: this stays cheap for the CLI and the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from heart_pipeline.errors import ConfigError


@dataclass(frozen=True)
class CodedColumn:
    name: str
    description: str
    codes: dict[int, str]

    def meaning(self, code: int) -> str:
        return self.codes[code]

    def describe(self) -> str:
        """``0 asymptomatic, 1 atypical angina, ...``: the codes in one line."""
        return ", ".join(f"{code} {label}" for code, label in self.codes.items())


@dataclass(frozen=True)
class Recode:
    """How one column of a foreign coding becomes one of ours (None: a missing-value marker)."""

    source: str
    column: str
    codes: dict[int, int | None]


@dataclass(frozen=True)
class ForeignCoding:
    name: str
    title: str
    header: bool
    columns: list[str]
    missing_markers: list[str]
    whitespace_missing_markers: list[str]
    codes: dict[str, dict[int, str]]
    to_ours: dict[str, Recode]
    # A text-coded copy (UCI's 920-row heart_disease_uci.csv): its words -> the numeric coding ``via``
    # (lower-cased, e.g. cp "typical angina" -> UCI 1), its column names -> ``via``'s, and the columns kept as they are.
    via: str | None = None
    text_codes: dict[str, dict[str, int]] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)

    def target_column(self, label_column: str) -> str:
        """This coding's name for our label column (UCI: num)."""
        for recode in self.to_ours.values():
            if recode.column == label_column:
                return recode.source
        return label_column

    def mapping_description(self) -> dict[str, str]:
        """Each recoded column as ``their code -> our code`` text, for provenance records."""
        return {
            f"{r.source}->{r.column}": ", ".join(f"{a}->{'missing' if b is None else b}" for a, b in r.codes.items())
            for r in self.to_ours.values()
        }


@dataclass(frozen=True)
class Measurement:
    """A measured column: what it measures and its unit."""

    name: str
    description: str
    unit: str

    @property
    def label(self) -> str:
        return f"{self.description} ({self.unit})"


@dataclass(frozen=True)
class Codebook:
    version: int
    label_column: str
    label_definition: str
    label_short: str
    columns: dict[str, CodedColumn]
    foreign: dict[str, ForeignCoding]
    path: Path
    measurements: dict[str, Measurement] = field(default_factory=dict)

    def describe(self, column: str) -> str:
        """A column in words: 'Serum cholesterol (mg/dL)', 'Chest pain type'; else its name."""
        if column in self.measurements:
            return self.measurements[column].label
        return self.columns[column].description if column in self.columns else column

    # Values that mean "not measured", not a measurement (no patient has a cholesterol of 0 mg/dL):
    # importers, scoring and external validation read them as missing (``placeholders_to_missing``).
    not_measured: dict[str, list[float]] = field(default_factory=dict)

    @property
    def label_tag(self) -> str:
        """``codebook v1, num>0``: what a model's label means, short enough for a tag or a run name."""
        return f"codebook v{self.version}, {self.label_short}"

    def column(self, name: str) -> CodedColumn:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a coded column; coded: {sorted(self.columns)}") from None

    def codes(self, column: str) -> list[int]:
        return list(self.column(column).codes)

    def code_meanings(self) -> dict[str, dict[str, str]]:
        """Every coded column's meanings keyed by the code as text, as profiles and summaries key them
        (``{"restecg": {"0": "left ventricular hypertrophy (Estes' criteria)", ...}}``)."""
        return {name: {str(code): text for code, text in coded.codes.items()} for name, coded in self.columns.items()}

    def meaning(self, column: str, code: int) -> str:
        """The meaning of ``code`` in ``column``; an unknown code says so rather than raising."""
        coded = self.column(column)
        return coded.codes.get(int(code), f"not a {column} code (valid: {coded.describe()})")

    def foreign_coding(self, name: str) -> ForeignCoding:
        try:
            return self.foreign[name]
        except KeyError:
            raise ConfigError(f"{self.path}: no foreign coding {name!r}; known: {sorted(self.foreign)}") from None


def _int_keyed(mapping: Any, where: str) -> dict[int, Any]:
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(f"{where}: expected a non-empty mapping of integer codes")
    try:
        return {int(k): v for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: codes must be integers, got {sorted(map(str, mapping))}") from None


def _foreign(name: str, raw: dict[str, Any], path: Path) -> ForeignCoding:
    where = f"{path}: foreign_codings.{name}"
    to_ours = {}
    for source, spec in (raw.get("to_ours") or {}).items():
        if source not in raw["columns"]:
            raise ConfigError(f"{where}.to_ours.{source}: not one of its columns {raw['columns']}")
        codes = _int_keyed(spec["codes"], f"{where}.to_ours.{source}.codes")
        to_ours[source] = Recode(source=source, column=spec["column"], codes=codes)
    return ForeignCoding(
        name=name,
        title=raw["title"],
        header=bool(raw["header"]),
        columns=list(raw["columns"]),
        missing_markers=[str(m) for m in raw.get("missing_markers") or []],
        whitespace_missing_markers=[str(m) for m in raw.get("whitespace_missing_markers") or []],
        codes={col: _int_keyed(codes, f"{where}.codes.{col}") for col, codes in (raw.get("codes") or {}).items()},
        to_ours=to_ours,
        via=raw.get("via"),
        text_codes={
            col: {str(text).strip().lower(): int(code) for text, code in codes.items()}
            for col, codes in (raw.get("text_codes") or {}).items()
        },
        renames={str(k): str(v) for k, v in (raw.get("renames") or {}).items()},
    )


def codebook_from_dict(raw: dict[str, Any], path: Path) -> Codebook:
    try:
        columns = {
            name: CodedColumn(name, spec["description"], _int_keyed(spec["codes"], f"{path}: columns.{name}"))
            for name, spec in raw["columns"].items()
        }
        foreign = {name: _foreign(name, spec, path) for name, spec in (raw.get("foreign_codings") or {}).items()}
        label = raw["label"]
        book = Codebook(
            version=int(raw["version"]),
            label_column=label["column"],
            label_definition=label["definition"],
            label_short=label["short"],
            columns=columns,
            foreign=foreign,
            path=path,
            measurements={
                name: Measurement(name, str(spec["description"]), str(spec["unit"]))
                for name, spec in (raw.get("measurements") or {}).items()
            },
            not_measured={str(c): [float(v) for v in values] for c, values in (raw.get("not_measured") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed codebook: {type(exc).__name__} {exc}") from None
    if book.label_column not in columns:
        raise ConfigError(f"{path}: the label column {book.label_column!r} has no codes under columns")
    for coding in foreign.values():
        for recode in coding.to_ours.values():
            ours = columns.get(recode.column)
            unknown = sorted({c for c in recode.codes.values() if c is not None} - set(ours.codes if ours else ()))
            if ours and unknown:
                raise ConfigError(
                    f"{path}: foreign_codings.{coding.name}.to_ours.{recode.source} maps to codes {unknown} "
                    f"that {recode.column} does not have"
                )
    return book


def load_codebook(path: Path | str) -> Codebook:
    """Read and check the codebook at ``path``. The config owns where it lives
    (``heart_pipeline.config.default_codebook`` reads the one the default config names)."""
    return _load_codebook_file(Path(path))


@lru_cache(maxsize=8)
def _load_codebook_file(book_path: Path) -> Codebook:
    """Read and check one codebook file (cached: several steps of one run read it)."""
    try:
        raw = yaml.safe_load(book_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{book_path}: cannot read the codebook: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{book_path}: the codebook must be a YAML mapping")
    return codebook_from_dict(raw, book_path)


def placeholders_to_missing(
    frame: pd.DataFrame, not_measured: dict[str, list[float]]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` with the codebook's "not measured" placeholders read as missing, and how many cells
    of each column were (only columns that had any)."""
    counts: dict[str, int] = {}
    out = frame
    for column, values in not_measured.items():
        if column not in frame.columns:
            continue
        hits = pd.to_numeric(frame[column], errors="coerce").isin(values).to_numpy()
        if hits.any():
            out = out.assign(**{column: out[column].mask(hits)})
            counts[column] = int(hits.sum())
    return out, counts


def disagreements_with_contract(book: Codebook, value_sets: dict[str, list[Any] | None]) -> list[str]:
    """Where the contract's code sets and the codebook's codes differ (empty when they agree)."""
    problems = []
    for name, coded in book.columns.items():
        contract_codes = value_sets.get(name)
        if contract_codes is None:
            problems.append(f"{name}: the codebook codes it, the contract has no value set")
        elif sorted(contract_codes) != sorted(coded.codes):
            problems.append(f"{name}: contract {sorted(contract_codes)} vs codebook {sorted(coded.codes)}")
    return problems
