"""The benchmark: the pipeline against a bare same-work baseline, at growing sizes.

    python -m heart_pipeline.bench.run [--sizes 303,10k,100k,1M] [--repeats 2] [--out bench]   (or: make bench)

For each size it writes a synthetic file grown from the bundled data (``heart_pipeline.bench.synthetic``),
then runs, in turn (ABAB...), ``heart-pipeline train`` against a private runs folder and MLflow
store, and ``python -m heart_pipeline.bench.baseline`` (plain pandas + scikit-learn, same work,
same cores). For each run it records the wall time, the peak resident memory of the process and
all its children (psutil, sampled every 0.1 s), and the per-step times: the Prefect task runs'
durations for the pipeline, the baseline's own timers for the bare run. It checks both reached
the same test ROC-AUC (same split, same models), prints a table of medians and writes
``OUT/bench_runs.csv`` (every run), ``OUT/bench_summary.csv`` and ``OUT/bench.png`` (time against rows).

It is a benchmark, not a test: the figures depend on the machine and its load (printed with them).
A Prefect server is needed for the task timings: PREFECT_API_URL if set, else the project's
background server (``heart_pipeline.operations.local_server``), started before the first timed run so that
every pipeline run is measured against a warm server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import heart_pipeline  # noqa: F401  (telemetry defaults)
from heart_pipeline.config import DEFAULT_CONFIG_PATH, PROJECT_ROOT, load_settings_and_contract, write_private_config

BIN = Path(sys.executable).parent
SIZE_SUFFIXES = {"k": 1_000, "m": 1_000_000}
DEFAULT_SIZES = "303,10k,100k,1M"
RSS_SAMPLE_SECONDS = 0.1
PREFECT_RUN_SUFFIX = re.compile(r"-[0-9a-f]{3}$")  # Prefect's default task run names end in 3 hex digits


def parse_size(text: str) -> int:
    text = text.strip().lower()
    if text and text[-1] in SIZE_SUFFIXES:
        return int(float(text[:-1]) * SIZE_SUFFIXES[text[-1]])
    return int(text)


def label(rows: int) -> str:
    for suffix, factor in (("M", 1_000_000), ("k", 1_000)):
        if rows >= factor and rows % factor == 0:
            return f"{rows // factor}{suffix}"
    return str(rows)


@dataclass
class Measured:
    wall_seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(command: list[str], env: dict[str, str], timeout: float) -> Measured:
    """Run ``command``; wall time and peak RSS summed over the process and all its descendants."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    peak = 0
    # Read the pipes in threads so a chatty child never blocks on a full pipe while we sample.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        out, err = pool.submit(process.stdout.read), pool.submit(process.stderr.read)  # type: ignore[union-attr]
        while process.poll() is None:
            try:
                members = [root, *root.children(recursive=True)]
                total = 0
                for member in members:
                    try:
                        total += member.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            if time.perf_counter() - started > timeout:
                process.kill()
                break
            time.sleep(RSS_SAMPLE_SECONDS)
        stdout, stderr = out.result(), err.result()
    process.wait()
    return Measured(round(time.perf_counter() - started, 2), round(peak / 2**20, 1), process.returncode, stdout, stderr)


def synthetic_file(rows: int, directory: Path, seed: int) -> Path:
    """The benchmark's input at ``rows`` rows, written once and reused."""
    path = directory / f"heart_{label(rows)}_seed{seed}.csv"
    if path.exists():
        return path
    from heart_pipeline.bench.synthetic import synthesize
    from heart_pipeline.tasks.load import write_default_dataset

    settings, contract = load_settings_and_contract()
    bundled = directory / "bundled_heart.csv"
    if not bundled.exists():
        write_default_dataset(bundled, settings)
    frame = synthesize(pd.read_csv(bundled), rows, contract, settings.features.numeric, seed)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def task_seconds(run_dir: str) -> dict[str, float]:
    """Each task run's duration, by task run name (train-random_forest, ...), from the Prefect API.

    The flow run is the newest heart-training run (the benchmark runs one at a time); its id must
    start with the short id that ends the run folder's name (heart_pipeline.operations.runs.create_run_folder).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    short_id = Path(run_dir).name.rsplit("-", 1)[-1]
    with get_client(sync_client=True) as client:
        (newest,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["heart-training"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        if not str(newest.id).startswith(short_id):
            raise SystemExit(f"bench: the newest heart-training run {newest.id} is not {run_dir}")
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[newest.id])))
    seconds: dict[str, float] = {}
    for run in runs:
        if run.start_time and run.end_time:
            step = PREFECT_RUN_SUFFIX.sub("", run.name)  # validate-628 -> validate, so runs line up
            seconds[step] = seconds.get(step, 0.0) + (run.end_time - run.start_time).total_seconds()
    return {name: round(value, 2) for name, value in sorted(seconds.items())}


@dataclass
class Result:
    rows: int
    kind: str  # ours | bare | dask-N
    repeat: int
    wall_seconds: float
    peak_rss_mib: float
    test_roc_auc: dict[str, float]
    steps: dict[str, float] = field(default_factory=dict)
    load_average: float = 0.0


def run_ours(
    data: Path, config: Path, env: dict[str, str], timeout: float, extra: tuple[str, ...] = ()
) -> tuple[Measured, dict[str, Any]]:
    command = [str(BIN / "heart-pipeline"), "train", "--json", "--data", str(data), "--config", str(config), *extra]
    measured = run_measured(command, env, timeout)
    if measured.returncode != 0:
        raise SystemExit(f"bench: the pipeline failed on {data}: {measured.stderr.strip().splitlines()[-1:]}")
    return measured, json.loads(measured.stdout)


def run_bare(data: Path, config: Path, out: Path, env: dict[str, str], timeout: float) -> tuple[Measured, Any]:
    command = [sys.executable, "-m", "heart_pipeline.bench.baseline", "--data", str(data), "--config", str(config)]
    measured = run_measured([*command, "--out", str(out)], env, timeout)
    if measured.returncode != 0:
        raise SystemExit(f"bench: the baseline failed on {data}: {measured.stderr.strip()[-800:]}")
    return measured, json.loads(measured.stdout)


def bench_size(rows: int, repeats: int, out: Path, base_config: Path, overrides: dict[str, Any]) -> list[Result]:
    data = synthetic_file(rows, out / "data", seed=0)
    env = {**os.environ}
    results: list[Result] = []
    for repeat in range(repeats):
        work = out / "work" / f"{label(rows)}-{repeat}"
        config = write_private_config(work, overrides, base_config)
        measured, summary = run_ours(data, config, env, timeout=7200)
        ours_auc = {name: m["metrics"]["test_roc_auc"] for name, m in summary["models"].items()}
        steps = task_seconds(summary["run_dir"])
        results.append(
            Result(
                rows, "ours", repeat, measured.wall_seconds, measured.peak_rss_mib, ours_auc, steps, os.getloadavg()[0]
            )
        )
        print(f"  {label(rows):>5} ours #{repeat}: {measured.wall_seconds:7.1f} s, {measured.peak_rss_mib:6.0f} MiB")
        measured, bare = run_bare(data, config, work / "bare", env, timeout=7200)
        bare_auc = {name: m["test_roc_auc"] for name, m in bare["models"].items()}
        results.append(
            Result(
                rows,
                "bare",
                repeat,
                measured.wall_seconds,
                measured.peak_rss_mib,
                bare_auc,
                bare["steps"],
                os.getloadavg()[0],
            )
        )
        print(f"  {label(rows):>5} bare #{repeat}: {measured.wall_seconds:7.1f} s, {measured.peak_rss_mib:6.0f} MiB")
        for name, auc in ours_auc.items():
            if abs(auc - bare_auc.get(name, float("nan"))) > 1e-9:
                print(f"  warning: {name} test ROC-AUC differs: ours {auc:.6f}, bare {bare_auc.get(name)}")
    return results


def bench_dask(rows: int, workers: list[int], out: Path, base_config: Path, overrides: dict[str, Any]) -> list[Result]:
    """The pipeline with ``--dask`` on a local cluster of N single-threaded worker processes, for each N.

    The cluster is started here, before the timed run, as a user's existing cluster would be; its
    workers are not children of the timed process, so their memory is not in the peak RSS.
    """
    from distributed import LocalCluster

    data = synthetic_file(rows, out / "data", seed=0)
    results = []
    for n in workers:
        config = write_private_config(out / "work" / f"{label(rows)}-dask{n}", overrides, base_config)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            extra = ("--dask", str(cluster.scheduler_address))
            measured, summary = run_ours(data, config, {**os.environ}, timeout=7200, extra=extra)
        auc = {name: m["metrics"]["test_roc_auc"] for name, m in summary["models"].items()}
        steps = task_seconds(summary["run_dir"])
        results.append(
            Result(rows, f"dask-{n}", 0, measured.wall_seconds, measured.peak_rss_mib, auc, steps, os.getloadavg()[0])
        )
        print(f"  {label(rows):>5} dask {n} worker(s): {measured.wall_seconds:7.1f} s")
    return results


def dask_table(results: list[Result]) -> str:
    """Wall time with N Dask workers against the default runner (this machine's cores, no Dask)."""
    lines = [
        "| rows | runner | wall | vs local cores | train + evaluate steps | load avg |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        local = [o.wall_seconds for o in results if o.rows == r.rows and o.kind == "ours"]
        base = statistics.median(local) if local else float("nan")
        model_steps = sum(v for k, v in r.steps.items() if k.startswith(("train-", "evaluate-")))
        runner = "local cores" if r.kind == "ours" else r.kind.replace("dask-", "Dask, ") + " worker(s)"
        lines.append(
            f"| {label(r.rows)} | {runner} | {r.wall_seconds:.1f} s | {base / r.wall_seconds:.2f}x | "
            f"{model_steps:.1f} s | {r.load_average:.1f} |"
        )
    return "\n".join(lines)


def summarise(results: list[Result]) -> pd.DataFrame:
    rows = []
    for size in sorted({r.rows for r in results}):
        ours = [r for r in results if r.rows == size and r.kind == "ours"]
        bare = [r for r in results if r.rows == size and r.kind == "bare"]
        ours_wall = statistics.median(r.wall_seconds for r in ours)
        bare_wall = statistics.median(r.wall_seconds for r in bare)
        step_medians = {
            step: statistics.median(r.steps.get(step, 0.0) for r in ours) for step in {s for r in ours for s in r.steps}
        }
        dominant = max(step_medians, key=lambda s: step_medians[s]) if step_medians else ""
        rows.append(
            {
                "rows": size,
                "ours_s": round(ours_wall, 1),
                "bare_s": round(bare_wall, 1),
                "ratio": round(ours_wall / bare_wall, 2),
                "ours_peak_rss_mib": round(statistics.median(r.peak_rss_mib for r in ours)),
                "bare_peak_rss_mib": round(statistics.median(r.peak_rss_mib for r in bare)),
                "dominant_step": f"{dominant} ({step_medians.get(dominant, 0):.1f} s)",
                "load_average": round(statistics.median(r.load_average for r in results if r.rows == size), 1),
                "repeats": len(ours),
            }
        )
    return pd.DataFrame(rows)


def plot(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(summary["rows"], summary["ours_s"], "o-", label="heart-pipeline train")
    ax.plot(summary["rows"], summary["bare_s"], "s--", label="bare pandas + scikit-learn baseline")
    for _, row in summary.iterrows():
        ax.annotate(f"{row['ratio']:.2f}x", (row["rows"], row["ours_s"]), textcoords="offset points", xytext=(4, 6))
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Seconds as plain numbers (20, 40, 100), not 2x10^1: people read times, not exponents.
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(
        matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else "")
    )
    ax.margins(x=0.15, y=0.1)  # room for the ratio labels of the first and last sizes
    ax.set_xlabel("rows")
    ax.set_ylabel("wall time (s), median")
    ax.set_title(f"heart-pipeline benchmark ({os.cpu_count()} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown_table(summary: pd.DataFrame) -> str:
    lines = [
        "| rows | ours | bare | ratio | peak RSS ours / bare | dominant step (ours) | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"| {label(int(r['rows']))} | {r['ours_s']} s | {r['bare_s']} s | {r['ratio']}x | "
            f"{r['ours_peak_rss_mib']} / {r['bare_peak_rss_mib']} MiB | {r['dominant_step']} | {r['load_average']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated row counts (default {DEFAULT_SIZES})")
    parser.add_argument("--repeats", type=int, default=2, help="ABAB pairs per size (default 2)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench", help="results folder (default bench/)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="base config (default the project's)")
    parser.add_argument(
        "--dask-workers",
        default="",
        metavar="N,N,...",
        help="also run the pipeline on a local Dask cluster of each N workers (e.g. 1,2,4), once per size",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. cross_validation.n_repeats=1",
    )
    args = parser.parse_args(argv)
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)

    from heart_pipeline.operations import local_server

    server = local_server.use_for_this_process()  # before Prefect is imported; children inherit it
    if server is not None:
        local_server.wait_ready(server)
    api = os.environ["PREFECT_API_URL"]
    print(f"bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, Prefect API {api}")
    workers = [int(n) for n in args.dask_workers.split(",") if n.strip()]
    results: list[Result] = []
    for rows in sizes:
        results.extend(bench_size(rows, args.repeats, args.out, args.config, overrides))
        if workers:
            results.extend(bench_dask(rows, workers, args.out, args.config, overrides))
        runs = pd.DataFrame([asdict(r) for r in results])
        runs.to_csv(args.out / "bench_runs.csv", index=False)  # after each size: a long run keeps what it has
        summary = summarise([r for r in results if r.kind in ("ours", "bare")])
        summary.to_csv(args.out / "bench_summary.csv", index=False)
        plot(summary, args.out / "bench.png")
    print(markdown_table(summarise([r for r in results if r.kind in ("ours", "bare")])))
    if workers:
        print(dask_table([r for r in results if r.kind != "bare"]))
    print(f"bench: wrote {args.out / 'bench_runs.csv'}, {args.out / 'bench_summary.csv'}, {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
