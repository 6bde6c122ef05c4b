"""The bare same-work baseline for the benchmark: plain pandas and scikit-learn, no Prefect, Great
Expectations or MLflow.

It does the pipeline's ML work on the same file with the same config: drop exact duplicates, the
seeded stratified split, the same model pipelines (built by the pipeline's own ``build_model``, so
the hyperparameters cannot drift), the out-of-fold Youden threshold, the final fit, test metrics,
repeated stratified CV, the four plots, a metrics CSV and the saved model, on the same number of
cores. The scoring code is written out again here on purpose: an independent reference whose test
metrics the benchmark compares with the pipeline's, so "same work" is checked, not assumed.

    python -m heart_pipeline.bench.baseline --data FILE --config CONFIG --out DIR [--n-jobs N]

Prints one JSON object: per-step seconds and each model's test metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import accuracy_score, f1_score, get_scorer, log_loss, roc_auc_score, roc_curve
from sklearn.model_selection import (
    FixedThresholdClassifier,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    cross_val_predict,
    cross_validate,
    train_test_split,
)

from heart_pipeline.config import load_config

STEPS: dict[str, float] = {}


@contextmanager
def timed(step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    STEPS[step] = round(time.perf_counter() - started, 3)


def plots(name: str, y_true: np.ndarray, proba: np.ndarray, threshold: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    draws = (
        lambda ax: RocCurveDisplay.from_predictions(y_true, proba, ax=ax),
        lambda ax: ConfusionMatrixDisplay.from_predictions(y_true, (proba >= threshold).astype(int), ax=ax),
        lambda ax: PrecisionRecallDisplay.from_predictions(y_true, proba, ax=ax),
        lambda ax: CalibrationDisplay.from_predictions(y_true, proba, n_bins=8, ax=ax),
    )
    for number, draw in enumerate(draws):
        figure, ax = plt.subplots(figsize=(5, 4.5))
        draw(ax)
        figure.savefig(out / f"{name}_{number}.png", dpi=100)
        plt.close(figure)


def run(data: Path, config: Path | None, out: Path, n_jobs: int) -> dict[str, Any]:
    from heart_pipeline.tasks.train import build_model

    settings = load_config(config)
    target, seed = settings.data.target, settings.split.seed
    out.mkdir(parents=True, exist_ok=True)
    with timed("load"):
        frame = pd.read_csv(data, na_values=settings.data.na_values, skipinitialspace=True)
    with timed("preprocess"):
        frame = frame.drop_duplicates(ignore_index=True)
        features, labels = frame.drop(columns=[target]), frame[target].astype(int)
        x_train, x_test, y_train, y_test = train_test_split(
            features, labels, test_size=settings.split.test_size, random_state=seed, stratify=labels
        )
    results: dict[str, Any] = {}
    for name in settings.training.models:
        pipeline = build_model(name, settings.hyperparameters(name), settings.features, seed)
        if name == "random_forest":
            pipeline.set_params(classifier__n_jobs=n_jobs)
        with timed(f"train-{name}"):
            folds = StratifiedKFold(n_splits=settings.cross_validation.n_splits, shuffle=True, random_state=seed)
            oof = cross_val_predict(clone(pipeline), x_train, y_train, cv=folds, method="predict_proba", n_jobs=n_jobs)
            fpr, tpr, cuts = roc_curve(y_train, oof[:, 1])
            threshold = float(np.clip(cuts[int(np.argmax(tpr - fpr))], 0, 1))
            model = FixedThresholdClassifier(pipeline, threshold=threshold, response_method="predict_proba")
            model.fit(x_train, y_train)
            joblib.dump(model, out / f"{name}.joblib")
        with timed(f"evaluate-{name}"), joblib.parallel_config(backend="sequential"):
            # sequential predictions: a forest then sums its trees in order, as the pipeline does
            proba = model.predict_proba(x_test)[:, 1]
            predicted = (proba >= threshold).astype(int)
            metrics = {
                "test_roc_auc": roc_auc_score(y_test, proba),
                "test_accuracy": accuracy_score(y_test, predicted),
                "test_f1": f1_score(y_test, predicted, zero_division=0),
                "test_log_loss": log_loss(y_test, proba, labels=[0, 1]),
            }
            repeated = RepeatedStratifiedKFold(
                n_splits=settings.cross_validation.n_splits, n_repeats=settings.cross_validation.n_repeats,
                random_state=seed,
            )  # fmt: skip
            scorers = {k: get_scorer(k) for k in ("roc_auc", "accuracy", "neg_log_loss")}
            with joblib.parallel_config(backend="loky"):
                cv = cross_validate(clone(model), x_train, y_train, cv=repeated, scoring=scorers, n_jobs=n_jobs)
            for key in scorers:
                metrics[f"cv_{key}_mean"] = float(np.mean(cv[f"test_{key}"]))
            metrics["train_roc_auc"] = roc_auc_score(y_train, model.predict_proba(x_train)[:, 1])
            plots(name, y_test.to_numpy(), proba, threshold, out)
            pd.DataFrame([{"model": name, "threshold": threshold, **metrics}]).to_csv(out / f"{name}_metrics.csv")
        results[name] = {k: float(v) for k, v in metrics.items()}
    return {"rows": len(frame), "steps": STEPS, "models": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.data, args.config, args.out, args.n_jobs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
