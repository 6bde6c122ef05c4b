"""The package's shape: one namespace, imports that run one way, and an API that loads no step it
does not use."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heart_pipeline.config import PROJECT_ROOT

# The one entry point allowed to import flows: it is what runs them.
# The benchmark and its bare baseline are entry points too: they run the steps' own model definitions.
ENTRY_POINTS = {"heart_pipeline/cli.py", "heart_pipeline/bench/run.py", "heart_pipeline/bench/baseline.py"}


def imported_modules(path: Path, with_names: bool = False) -> set[str]:
    """Every absolute import of a file, at any depth; ``with_names`` adds ``module.name`` for each
    ``from module import name`` (a submodule imported that way)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if with_names:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
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
        "import sys, heart_pipeline.serving.app\n"
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
        "import heart_pipeline.serving.app, heart_pipeline.flows.training, heart_pipeline.tasks.validate\n"
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
    from heart_pipeline.flows.external_validation import heart_external_validation
    from heart_pipeline.flows.training import heart_training
    from heart_pipeline.flows.training_dask import heart_training_dask
    from heart_pipeline.operations.runs import publish_failure_report

    for flow in (
        heart_training,
        heart_training_dask,
        heart_batch_scoring,
        heart_data_quality,
        heart_external_validation,
    ):
        hooks = (flow.on_failure_hooks, flow.on_crashed_hooks, flow.on_cancellation_hooks)
        assert all(publish_failure_report in kind for kind in hooks), flow.name


# The base package's map: each concern one subpackage; a subpackage may import only the ones listed.
# "core" is the root's loose modules (config, errors, results, caching, the package itself).
SUBPACKAGES = ("data_contract", "evidence", "tracking", "monitoring", "serving", "operations", "bench")
MAY_IMPORT = {
    "core": {"core"},
    "data_contract": {"core"},
    "evidence": {"core", "data_contract"},
    "tracking": {"core", "data_contract", "evidence"},
    # monitoring measures scored batches against a champion's training profile (issue 20)
    "monitoring": {"core", "data_contract", "evidence", "tracking"},
    # the API's /predict window and the operations around runs record batch summaries
    "serving": {"core", "data_contract", "evidence", "tracking", "monitoring"},
    "operations": {"core", "data_contract", "evidence", "tracking", "monitoring"},
    # the benchmark is an entry point: it runs the steps themselves
    "bench": {"core", "data_contract", "evidence", "tracking", "operations", "tasks", "flows"},
}
# config owns loading the contract, the codebook and the algorithm table: the one sanctioned step upward.
CORE_EXCEPTIONS = {
    "heart_pipeline.data_contract.codebook",
    "heart_pipeline.data_contract.contract",
    "heart_pipeline.evidence.algorithms",
    "heart_pipeline.evidence.stats",
}
LOOSE_MODULE_LIMIT = 12
FUNCTION_LINE_LIMIT = 60


def module_name(path: Path) -> str:
    relative = path.relative_to(PROJECT_ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[0] in ("tasks", "flows"):
        parts = ["heart_pipeline", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def concern_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in (*SUBPACKAGES, "tasks", "flows"):
        return parts[1]
    if module == "heart_pipeline.cli":
        return "cli"
    return "core"


def all_imports(path: Path) -> set[str]:
    """Every heart_pipeline module a file imports, at any depth (function-level imports included)."""
    return {n for n in imported_modules(path, with_names=True) if n.split(".")[0] == "heart_pipeline"}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in source_files()}
    return {name: {m for m in all_imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_subpackages_import_only_downward() -> None:
    violations = []
    for module, imports in import_graph().items():
        source = concern_of(module)
        if source not in MAY_IMPORT:
            continue  # tasks, flows (test_imports_run_one_way) and the CLI, which composes everything
        for target in imports:
            allowed = MAY_IMPORT[source] | {source}
            if concern_of(target) not in allowed and not (source == "core" and target in CORE_EXCEPTIONS):
                violations.append(f"{module} ({source}) imports {target} ({concern_of(target)})")
    assert not violations, "\n".join(sorted(violations))


def test_no_import_cycle() -> None:
    graph = import_graph()
    # package __init__ files only document; an edge to a package stands for nothing
    graph = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    visiting: set[str] = set()
    done: set[str] = set()
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(" -> ".join([*trail[trail.index(node) :], node]))
            return
        visiting.add(node)
        for target in sorted(graph[node]):
            visit(target, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_the_base_package_lists_few_loose_modules() -> None:
    loose = sorted(p.name for p in (PROJECT_ROOT / "heart_pipeline").glob("*.py"))
    assert len(loose) <= LOOSE_MODULE_LIMIT, loose
    for name in SUBPACKAGES:
        assert (PROJECT_ROOT / "heart_pipeline" / name / "__init__.py").exists(), name


def test_no_function_runs_past_the_limit() -> None:
    long = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINE_LIMIT:
                    long.append(f"{path.relative_to(PROJECT_ROOT)}:{node.name} {length} lines")
    assert not long, "\n".join(long)


def test_every_imported_distribution_is_declared() -> None:
    """A package the code imports arrives because pyproject.toml asks for it, not as someone's dependency."""
    import tomllib
    from importlib.metadata import packages_distributions

    declared = {
        re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        for spec in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    provided_by = packages_distributions()
    missing = set()
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "heart_pipeline":
                    continue
                # pydantic-core ships with pydantic and is versioned by it
                dists = {d.lower().replace("_", "-") for d in provided_by.get(top, [top])} - {"pydantic-core"} or {
                    "pydantic"
                }
                if not dists & declared:
                    missing.add(f"{top} ({', '.join(sorted(dists))}) in {path.relative_to(PROJECT_ROOT)}")
    assert not missing, "\n".join(sorted(missing))
