"""Every exercise of the notebooks, filled with its reference solution, passes its check.

Each stub cell (a ``def my_<name>(...)`` whose body is ``raise NotImplementedError  #
your code here``) is replaced by the solution of the same name from ``solutions/``;
the notebook then runs top to bottom in fast mode, and every check cell must report
"correct on all" (never "not attempted yet", "wrong on" or "raised"). This guards the
statements, the stubs, the checks and the solutions together: a renamed function, a
check cell that no longer rebinds its name, or a solution that drifted from the
library all fail here.
"""

from __future__ import annotations

import re
import subprocess
import sys

import nbformat
import pytest

from solo_lib.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STUB_MARK = "raise NotImplementedError  # your code here"
STUB_NAME = re.compile(r"^def (my_\w+)\(", re.MULTILINE)


def solution_files() -> dict[str, str]:
    """Where each reference solution lives: ``my_<name>`` -> file name in ``solutions/``."""
    found = {}
    for path in sorted((REPO_ROOT / "solutions").glob("*.py")):
        for name in STUB_NAME.findall(path.read_text()):
            found[name] = path.name
    return found


def filled_cell(name: str, file_name: str) -> str:
    """A cell that defines `name` as the reference solution (loaded by path: the
    repository's ``data/`` folder would shadow a plain ``import data``)."""
    path = REPO_ROOT / "solutions" / file_name
    return (
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('solution_{path.stem}', {str(path)!r})\n"
        "_module = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_module)\n"
        f"{name} = _module.{name}\n"
    )


#: Seconds for one notebook in fast mode, far above its 0.5-2 minutes.
NOTEBOOK_TIMEOUT = 900

RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient

notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=300, resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(notebook, sys.argv[3])
"""


def execute_in_subprocess(notebook, path, tmp_path):
    """Run `notebook` (filled) in its own process, in `path`'s folder; return it executed.

    Its own process, with timeouts (300 s a cell, `NOTEBOOK_TIMEOUT` in all) and one
    retry: once, an in-process run waited forever for a reply its idle kernel had
    already given. A real failure fails both tries, and its traceback is printed.
    """
    source, executed = tmp_path / "filled.ipynb", tmp_path / "executed.ipynb"
    nbformat.write(notebook, source)
    command = [sys.executable, "-c", RUNNER, str(source), str(path.parent), str(executed)]
    try:
        subprocess.run(command, check=True, timeout=NOTEBOOK_TIMEOUT)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        subprocess.run(command, check=True, timeout=NOTEBOOK_TIMEOUT)
    return nbformat.read(executed, as_version=4)


def test_every_stub_has_a_solution_and_every_notebook_stub_count():
    """Ten exercises or more across the notebooks, each with a reference solution."""
    solutions = solution_files()
    stubs = [
        name
        for path in NOTEBOOKS
        for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "code" and STUB_MARK in cell.source
        for name in STUB_NAME.findall(cell.source)
    ]
    assert len(stubs) >= 8
    assert len(set(stubs)) == len(stubs), "two stubs share a name"
    assert not set(stubs) - set(solutions), "stubs without a reference solution"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_pass_every_check_of_the_notebook(path, monkeypatch, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    solutions = solution_files()
    filled = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and STUB_MARK in cell.source:
            (name,) = STUB_NAME.findall(cell.source)
            cell.source = filled_cell(name, solutions[name])
            filled.append(name)
    if not filled:
        pytest.skip(f"{path.name} has no exercises")
    monkeypatch.setenv("SOLO_FAST", "1")
    notebook = execute_in_subprocess(notebook, path, tmp_path)
    reports = [
        "".join(output.get("text", "") for output in cell.outputs)
        for cell in notebook.cells
        if cell.cell_type == "code" and re.search(r"= check_\w+\(my_\w+\)", cell.source)
    ]
    assert len(reports) == len(filled), f"{path.name}: one check cell per stub"
    for report in reports:
        assert "correct on all" in report, report
        for failure in ("not attempted yet", "wrong on", "raised"):
            assert failure not in report, report
