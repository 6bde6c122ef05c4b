"""notebooks/walkthrough.ipynb: committed without outputs, and it runs top to bottom (any raising cell fails).

Executed with nbclient in a plain pytest test: no extra runner or plugin, the venv's own ipykernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from heart_pipeline.config import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "walkthrough.ipynb"


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    dirty = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} carry outputs or execution counts: clear them before committing"


def test_the_other_site_is_made_in_the_notebook_with_the_flow_s_own_functions() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    for used in ("heart_external_validation(", "subgroup_frame(", "card_for(", ".to_csv(OTHER_SITE"):
        assert used in code, used
    assert "shared" not in code, "the notebook runs on a fresh clone: nothing from outside the checkout"


@pytest.mark.e2e
def test_the_walkthrough_runs_top_to_bottom(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "heart-disease@champion -> " in printed
    assert "on 1 site(s) (95% bootstrap intervals)" in printed and "older-patients" in printed
    assert "200 {'status': 'ok'" in printed
    assert not list(tmp_path.iterdir()), "the notebook writes only into its own temporary workspace"
