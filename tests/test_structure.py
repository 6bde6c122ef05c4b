"""The package's shape: one namespace, imports that run one way, and an API that loads no step it
does not use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from heart_pipeline.config import PROJECT_ROOT

# The one entry point allowed to import flows: it is what runs them.
# The benchmark and its bare baseline are entry points too: they run the steps' own model definitions.
ENTRY_POINTS = {"heart_pipeline/cli.py", "heart_pipeline/bench.py", "heart_pipeline/bench_baseline.py"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer_of(relative: str) -> str:
    if relative.startswith("flows/"):
        return "flows"
    if relative.startswith("tasks/"):
        return "tasks"
    return "base"


FORBIDDEN = {
    # what each layer may never import: flows -> tasks -> base, never back up
    "base": ("heart_pipeline.tasks", "heart_pipeline.flows"),
    "tasks": ("heart_pipeline.flows",),
    "flows": (),
}


def source_files() -> list[Path]:
    return sorted(p for folder in ("heart_pipeline", "tasks", "flows") for p in (PROJECT_ROOT / folder).rglob("*.py"))


def test_imports_run_one_way() -> None:
    violations = []
    for path in source_files():
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in ("tasks", "flows"):
                violations.append(f"{relative} imports the bare top-level package {module!r}")
            if relative in ENTRY_POINTS:
                continue
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[layer_of(relative)]):
                violations.append(f"{relative} ({layer_of(relative)}) imports {module}")
    assert not violations, "\n".join(violations)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_the_api_loads_no_step_or_flow() -> None:
    code = (
        "import sys, heart_pipeline.api\n"
        "print(sorted(m for m in sys.modules if m.startswith(('heart_pipeline.tasks', 'heart_pipeline.flows'))))"
    )
    result = run_python(code, PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.e2e
def test_local_modules_named_tasks_or_flows_break_nothing(tmp_path: Path) -> None:
    """Invoke's tasks.py or a Celery module in the working directory must not shadow the package."""
    (tmp_path / "tasks.py").write_text("raise SystemExit('the local tasks.py was imported')\n")
    (tmp_path / "flows.py").write_text("raise SystemExit('the local flows.py was imported')\n")
    code = (
        "import heart_pipeline.api, heart_pipeline.flows.training, heart_pipeline.tasks.validate\n"
        "print(heart_pipeline.tasks.validate.__name__)"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout
    assert result.stdout.strip() == "heart_pipeline.tasks.validate"


@pytest.mark.e2e
def test_a_built_wheel_runs_outside_the_checkout(
    tmp_path: Path, prefect_server: str, clean_csv: Path, session_dir: Path
) -> None:
    """`python -m build` makes a wheel that, installed in a fresh venv and run from an empty folder,
    finds its bundled config and contract and trains on a given file."""
    import os
    import sysconfig

    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(PROJECT_ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = dist.glob("heart_pipeline-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    fresh_site = Path(
        subprocess.check_output(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    # The dependencies come from this venv's site-packages, added as a plain path (a .pth line): that
    # path's own .pth files, among them this checkout's editable-install finder, are not processed, so the
    # only heart_pipeline the fresh venv can import is the wheel's.
    (fresh_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(session_dir / "prefect-home")}
    for variable in ("HEART_PIPELINE_ROOT", "MLFLOW_TRACKING_URI"):
        env.pop(variable, None)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import heart_pipeline; print(heart_pipeline.__file__)"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(fresh_site)), where.stdout + where.stderr
    contract = subprocess.run(
        [str(venv / "bin" / "heart-pipeline"), "contract"], cwd=workspace, env=env, capture_output=True, text=True
    )
    assert contract.returncode == 0, contract.stderr[-2000:]
    assert "expect_column_values_to_be_between(chol)" in contract.stdout
    train = subprocess.run(
        [str(venv / "bin" / "heart-pipeline"), "train", "--data", str(clean_csv), "--models", "logistic_regression"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert (workspace / "mlruns" / "mlflow.db").exists(), "outputs go to the user's workspace"
    assert any((workspace / "runs" / "heart-training").iterdir())


def test_every_flow_reports_failure_crash_and_cancellation() -> None:
    """A run that ends badly in any of Prefect's three ways closes its MLflow records and says why."""
    from heart_pipeline.flows.batch_scoring import heart_batch_scoring
    from heart_pipeline.flows.data_quality import heart_data_quality
    from heart_pipeline.flows.training import heart_training
    from heart_pipeline.flows.training_dask import heart_training_dask
    from heart_pipeline.runs import publish_failure_report

    for flow in (heart_training, heart_training_dask, heart_batch_scoring, heart_data_quality):
        hooks = (flow.on_failure_hooks, flow.on_crashed_hooks, flow.on_cancellation_hooks)
        assert all(publish_failure_report in kind for kind in hooks), flow.name
