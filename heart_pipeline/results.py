"""What the steps return: plain, typed records shared by steps, renderers, the CLI and the API.

They live in the base package so that renderers and entry points can read them without importing
a step module (imports run flows -> tasks -> base, never back up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heart_pipeline.errors import MAX_MESSAGE_CHARS, DataError


@dataclass(frozen=True)
class DatasetSummary:
    """What the load step found, without the rows: small enough for logs, tags and run names."""

    path: str
    fingerprint: str
    n_rows: int
    n_columns: int
    provenance: str


@dataclass(frozen=True)
class RuleOutcome:
    """The result of one rule on one file, read from GE's own result (severity, notes, index)."""

    rule: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int
    lines: list[int]  # the first failing file lines (bounded); quarantine.csv holds them all
    detail: str
    why: str
    checks: str = ""  # the bound or code set in words: "between 100 and 600", "one of 0, 1"


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the file as found, beside what the contract allows and what the reference holds."""

    column: str
    rows: int
    missing: int
    observed: str  # '29 to 77 (median 56)' or '0: 96, 1: 207'
    allowed: str  # 'between 1 and 120', 'one of 0, 1' or '' when the contract sets neither
    outside: int  # rows with a recorded value outside the bounds or the code set
    reference: str = ""  # the reference profile's shares, '' when it has none for this column
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class ValidationReport:
    data_path: str
    fingerprint: str
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    quarantined_by_rule: dict[str, int]
    duplicate_rows: int  # extra copies of an earlier row: kept here, dropped by preprocess before the split
    duplicate_lines: list[int]  # the first of them (bounded)
    decision: str  # passed | quarantined | failed
    critical_failures: list[str]
    warning_failures: list[str]
    outcomes: list[RuleOutcome] = field(default_factory=list)
    distinct_rows: int = 0
    disease_share_in: float | None = None  # share of target = 1 before and after quarantine
    disease_share_kept: float | None = None
    # Filled in by the step's I/O layer once the evidence is written into the run folder.
    validated_path: str | None = None
    quarantine_path: str | None = None
    report_path: str | None = None
    html_report_path: str | None = None  # the self-contained page people open (report.html)
    profile: list[ColumnProfile] = field(default_factory=list)  # what each column holds (the report leads with it)

    @property
    def passed(self) -> bool:
        return self.decision != "failed"

    @property
    def rows_used(self) -> int:
        """Rows the run goes on with: none when the file is refused (``rows_kept`` then counts only the
        rows that pass the row-level rules)."""
        return self.rows_kept if self.passed else 0

    def failure_message(self) -> str:
        """One bounded line: the file, as many critical failures as fit (each names its remedy first), and
        where the full report is. The report's path is never the part that gets cut."""
        where = self.html_report_path or self.report_path
        tail = f" (full report: {where})" if where else ""
        path = self.data_path if len(self.data_path) <= 160 else "..." + self.data_path[-157:]
        head = f"{path}: data-quality gate failed: "
        room = MAX_MESSAGE_CHARS - len(head) - len(tail) - 12
        shown: list[str] = []
        for reason in self.critical_failures or ["a critical rule failed"]:
            left = room - sum(len(s) + 2 for s in shown)
            if left < 40:
                break
            shown.append(reason if len(reason) <= left else reason[: left - 3] + "...")
        more = len(self.critical_failures) - len(shown)
        return head + "; ".join(shown) + (f" [+{more} more]" if more > 0 else "") + tail

    def enforce(self) -> ValidationReport:
        """Stop with the one-line reason if a critical rule failed."""
        if not self.passed:
            raise DataError(self.failure_message())
        return self

    def summary(self) -> dict[str, Any]:
        """Counts only, for logs, MLflow params and markdown."""
        return {
            "data_path": self.data_path,
            "fingerprint": self.fingerprint,
            "decision": self.decision,
            "rows_in": self.rows_in,
            "rows_kept": self.rows_used,
            "rows_passing_row_rules": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_by_rule": self.quarantined_by_rule,
            "duplicate_rows": self.duplicate_rows,
            "distinct_rows": self.distinct_rows,
            "disease_share_in": self.disease_share_in,
            "disease_share_kept": self.disease_share_kept,
            "critical_failures": self.critical_failures,
            "warning_failures": self.warning_failures,
        }


@dataclass(frozen=True)
class Evaluation:
    name: str
    metrics: dict[str, float]
    threshold: float
    threshold_note: str
    cv_scores: dict[str, list[float]] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)  # kind -> PNG path, written by the task wrapper
    metrics_csv: str = ""
    subgroups: list[SubgroupResult] = field(default_factory=list)  # the held-out rows by sex and age band
    subgroup_files: list[str] = field(default_factory=list)  # subgroups.json, .csv, .md


@dataclass(frozen=True)
class LoggedRun:
    """One model's MLflow run, before registration."""

    name: str
    run_id: str
    experiment_id: str
    model_uri: str
    ui_url: str


@dataclass(frozen=True)
class TrackedModel:
    """A logged run plus the registry version made from it."""

    name: str
    run_id: str
    experiment_id: str
    model_uri: str
    registered_model: str
    version: str
    ui_url: str
    created: bool = True  # False: the version of an identical earlier model (or of this run's retry) was reused


@dataclass(frozen=True)
class PairedComparison:
    """Corrected resampled t-test (Nadeau & Bengio) of two models' CV ROC-AUC on the same folds."""

    better: str
    worse: str
    mean_difference: float
    p_value: float


@dataclass(frozen=True)
class PromotionDecision:
    registered_model: str
    challenger: str
    challenger_version: str
    promoted: bool
    reasons: list[str]
    challenger_metrics: dict[str, float]
    champion_version_before: str | None
    champion_metrics: dict[str, float] | None
    champion_version_after: str | None
    comparison: PairedComparison | None = None
    floors: dict[str, float] = field(default_factory=dict)
    metric: str = "test_roc_auc"
    margin: float = 0.0
    outcome: str = ""  # promoted | rejected | already champion | identical to champion | label alarm
    alarm: str | None = None  # today's labels and the champion's disagree: the run fails with this
    rows_compared: int | None = None  # today's held-out rows both models were scored on
    rows_left_out: int | None = None  # held-out rows left out: they were in the champion's training data
    challenger_compared_metrics: dict[str, float] | None = None  # the challenger on those same rows
    alpha: float = 0.05  # the paired CV test's significance level (promotion.alpha)
    tie: str | None = None  # the CV difference was not significant: how the tie rule ordered the candidates
    tie_rule: str | None = None  # the rule that broke that tie (promotion.tie_rule), when there was one
    floors_on: str = "point"  # floors checked on the estimate or on its interval's lower bound


@dataclass(frozen=True)
class ScoringResult:
    predictions_path: str
    rows_scored: int
    model_version: str
    copied_to: str | None
    imputed_shares: dict[str, float] = field(default_factory=dict)  # per column the model reads
    warnings: list[str] = field(default_factory=list)  # "ca imputed for 99% of rows: ..."
    monitoring: str = ""  # "batch of 303 rows recorded for monitoring (MLflow run ...)", or why not

    @property
    def where(self) -> Path:
        return Path(self.copied_to or self.predictions_path)


@dataclass(frozen=True)
class SubgroupResult:
    """One subgroup's figures (``evidence.subgroups``): the same metric names as the whole site.

    ``estimable`` False: too few rows or one class only; ``note`` says which, and ``metrics`` is empty
    (no number is printed for a group that cannot support one)."""

    attribute: str  # sex | age_band | site
    group: str  # "female", "50-59", "hungarian"
    n: int
    positives: int
    estimable: bool
    note: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # <name>, <name>_ci95_low, <name>_ci95_high
    warning: str | None = None  # sensitivity below the promotion floor (promotion.floors.test_recall)


@dataclass(frozen=True)
class ExternalValidation:
    """A registered model measured on one site's labelled file (heart-external-validation).

    Field names are stable: the model card and the version's tags read them. ``metrics`` holds every
    name of ``evidence.external.EXTERNAL_METRICS`` with ``_ci95_low`` / ``_ci95_high``;
    ``imputed_shares`` the share of scored rows whose value was missing per column (the model's
    imputers filled them)."""

    site: str
    data_path: str
    data_fingerprint: str
    registered_model: str
    model_version: str
    threshold: float
    n: int  # rows scored (recorded values valid; missing ones imputed)
    rows_in: int
    rows_quarantined: int
    prevalence: float  # observed share with disease among the scored rows
    metrics: dict[str, float]
    decision_curve: list[dict[str, float]] = field(default_factory=list)
    subgroups: list[SubgroupResult] = field(default_factory=list)
    imputed_shares: dict[str, float] = field(default_factory=dict)
    placeholders_read_as_missing: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    run_id: str = ""
    run_url: str = ""
    predictions_path: str = ""
    validation_report: str | None = None
    plots: dict[str, str] = field(default_factory=dict)

    def headline(self, names: tuple[str, ...]) -> dict[str, float]:
        """``names`` with their intervals, for tags and summary lines."""
        keys = [k for name in names for k in (name, f"{name}_ci95_low", f"{name}_ci95_high")]
        return {k: self.metrics[k] for k in keys if k in self.metrics}
