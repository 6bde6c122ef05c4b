"""The contract's custom Great Expectations expectations: the checks of meaning GE has no class for.

GE's own expectations cover missingness (``expect_column_proportion_of_non_null_values_to_be_between``),
constant columns (``expect_column_unique_value_count_to_be_between``) and duplicates
(``expect_compound_columns_to_be_unique`` with ``mostly``). Three checks need knowledge GE lacks:

- ``expect_target_to_agree_with_disease_markers``: the label's direction (clinical markers);
- ``expect_coded_columns_to_fit_the_project_coding``: another known coding (the codebook's);
- ``expect_column_value_shares_to_match_reference``: placeholders and shift (a reference profile).

Each is a GE metric (so GE computes and caches it like its own) plus an expectation class, so it
runs in the suite's validation, has GE's native severity and notes, and shows in the run's report. The
statistics are pure functions in heart_pipeline.data_contract.meaning. Importing this module registers the
classes with GE (it imports GE: only the validate step does so). Run-time inputs (the reference
profile, the codebook's codings) are filled into the kwargs by ``resolve_expectations``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation, ColumnAggregateExpectation
from great_expectations.expectations.metrics.column_aggregate_metric_provider import (
    ColumnAggregateMetricProvider,
    column_aggregate_value,
)
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from heart_pipeline.data_contract.meaning import (
    MarkerEffect,
    Shift,
    coding_reason,
    foreign_coding_fits,
    label_inversion_reason,
    largest_shift,
    marker_effects,
    shift_reason,
)


def _table(execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict[str, Any]) -> Any:
    frame, _, _ = execution_engine.get_compute_domain(
        domain_kwargs=metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
    )
    return frame


def _frame_metric(compute: Callable[[Any, dict[str, Any]], Any]) -> Any:
    """A pandas metric over the whole batch: ``compute(frame, value_kwargs)``, in GE's signature."""

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(
        cls: type,
        execution_engine: PandasExecutionEngine,
        metric_domain_kwargs: dict[str, Any],
        metric_value_kwargs: dict[str, Any],
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any],
    ) -> Any:
        return compute(_table(execution_engine, metric_domain_kwargs), metric_value_kwargs)

    return _pandas


class DiseaseMarkerEffects(TableMetricProvider):
    metric_name = "heart.disease_marker_effects"
    value_keys = ("target", "markers")
    _pandas = _frame_metric(lambda frame, kw: [asdict(e) for e in marker_effects(frame, kw["target"], kw["markers"])])


class ExpectTargetToAgreeWithDiseaseMarkers(BatchExpectation):
    """Disease (target = 1) must not go the wrong way on several clinical markers at once."""

    target: str
    markers: list[dict[str, Any]]
    min_reversed: int = 2
    max_p_value: float = 0.001

    metric_dependencies: ClassVar[tuple[str, ...]] = ("heart.disease_marker_effects",)
    success_keys: ClassVar[tuple[str, ...]] = ("target", "markers", "min_reversed", "max_p_value")

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: dict[str, Any] | None = None, execution_engine: Any = None
    ) -> dict[str, Any]:
        effects = [MarkerEffect(**e) for e in metrics["heart.disease_marker_effects"]]
        reason = label_inversion_reason(effects, self.min_reversed, self.max_p_value)
        observed = {e.marker: {"auc": round(e.auc, 3), "p_reversed": float(f"{e.p_reversed:.3g}")} for e in effects}
        return {"success": reason is None, "result": {"observed_value": observed, "details": {"reason": reason}}}


class ForeignCodingFits(TableMetricProvider):
    metric_name = "heart.foreign_coding_fits"
    value_keys = ("columns", "codings", "reference", "min_evidence")
    _pandas = _frame_metric(
        lambda frame, kw: foreign_coding_fits(frame, kw["columns"], kw["codings"], kw["reference"], kw["min_evidence"])
    )


class ExpectCodedColumnsToFitTheProjectCoding(BatchExpectation):
    """Coded columns must fit the project's coding better than any known foreign coding."""

    columns: list[str]
    min_evidence: float = 10.0  # nats: the foreign coding must be e^10 (22,000) times likelier
    codings: dict[str, dict[str, dict[str, Any]]] = {}
    coding_titles: dict[str, str] = {}
    reference: dict[str, Any] = {}

    metric_dependencies: ClassVar[tuple[str, ...]] = ("heart.foreign_coding_fits",)
    success_keys: ClassVar[tuple[str, ...]] = ("columns", "codings", "reference", "min_evidence")

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: dict[str, Any] | None = None, execution_engine: Any = None
    ) -> dict[str, Any]:
        fits = metrics["heart.foreign_coding_fits"]
        reason = coding_reason(fits, self.coding_titles)
        return {"success": reason is None, "result": {"observed_value": fits, "details": {"reason": reason}}}


class ColumnLargestShift(ColumnAggregateMetricProvider):
    metric_name = "column.heart_largest_shift"
    value_keys = ("reference",)

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, reference: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
        shift = largest_shift(column, str(column.name), reference)
        return asdict(shift) if shift else None


class ExpectColumnValueSharesToMatchReference(ColumnAggregateExpectation):
    """No code or value bin may take a much larger or smaller share of rows than in the reference."""

    max_difference: float = 0.25
    max_p_value: float = 0.001
    reference: dict[str, Any] = {}
    reference_source: str = "reference"

    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.heart_largest_shift",)
    success_keys: ClassVar[tuple[str, ...]] = ("reference", "max_difference", "max_p_value")

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: dict[str, Any] | None = None, execution_engine: Any = None
    ) -> dict[str, Any]:
        found = metrics["column.heart_largest_shift"]
        shift = Shift(**{**found, "column": self.column}) if found else None
        reason = shift_reason(shift, self.max_difference, self.max_p_value, self.reference_source)
        observed = (
            None if shift is None else {"value": shift.value, "share": shift.observed, "reference": shift.reference}
        )
        return {"success": reason is None, "result": {"observed_value": observed, "details": {"reason": reason}}}
