"""Every exercise of the notebooks, filled with its reference solution, passes its check.

Each stub cell (a ``def my_<name>(...)`` whose body is ``raise NotImplementedError  #
your code here``) is replaced by the solution of the same name from ``solutions/``;
the notebook then runs top to bottom in fast mode, and every check cell must report
"correct on all" (never "not attempted yet", "wrong on" or "raised"). This guards the
statements, the stubs, the checks and the solutions together: a renamed function, a
check cell that no longer rebinds its name, or a solution that drifted from the
library all fail here. A run is retried only after the known kernel-reply hang
(`execute_in_subprocess`; the tests at the end check that rule with a stand-in runner).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

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
#: Seconds a cell may wait for its kernel's reply, far above any cell's run time.
CELL_TIMEOUT = 300
#: The runner's exit status when a cell got no reply within `CELL_TIMEOUT` (nbclient's
#: `CellTimeoutError`): the known hang, the one failure besides `NOTEBOOK_TIMEOUT` that
#: is retried.
REPLY_TIMEOUT_EXIT = 75

#: Runs a notebook: argv = source, working folder, result, cell timeout, exit status
#: for a cell timeout. A cell's error, a dead kernel or any other failure exits 1.
RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError

source, folder, result, cell_timeout, reply_timeout_exit = sys.argv[1:]
notebook = nbformat.read(source, as_version=4)
client = NotebookClient(
    notebook, timeout=int(cell_timeout), resources={"metadata": {"path": folder}}
)
try:
    client.execute()
except CellTimeoutError as error:
    print(f"no reply from the kernel in time: {error}", file=sys.stderr)
    sys.exit(int(reply_timeout_exit))
nbformat.write(notebook, result)
"""


class KernelReplyTimeout(UserWarning):
    """A notebook run got no reply in time and is run once more."""


def execute_in_subprocess(
    notebook: nbformat.NotebookNode, path: Path, tmp_path: Path
) -> nbformat.NotebookNode:
    """Run `notebook` (filled) in its own process, in `path`'s folder; return it executed.

    Its own process, with timeouts (`CELL_TIMEOUT` a cell, `NOTEBOOK_TIMEOUT` in all).
    Once, in a fresh-clone CI run, the in-process client waited forever for a reply its
    idle kernel had already given (both sides in epoll). That hang, and only it, is
    retried once, with a `KernelReplyTimeout` warning in pytest's summary: a cell
    without a reply in time (the runner's `REPLY_TIMEOUT_EXIT`) or a run past
    `NOTEBOOK_TIMEOUT`. Any other failure (a cell's error, a dead kernel) fails at once,
    its traceback printed; a hang that happens twice fails too.
    """
    source, executed = tmp_path / "filled.ipynb", tmp_path / "executed.ipynb"
    nbformat.write(notebook, source)
    command = [
        sys.executable,
        "-c",
        RUNNER,
        str(source),
        str(path.parent),
        str(executed),
        str(CELL_TIMEOUT),
        str(REPLY_TIMEOUT_EXIT),
    ]
    for attempt in (1, 2):
        try:
            subprocess.run(command, check=True, timeout=NOTEBOOK_TIMEOUT)
            break
        except subprocess.TimeoutExpired as error:
            reason = f"{path.name}: the run outlived {error.timeout} s"
            if attempt == 2:
                raise
        except subprocess.CalledProcessError as error:
            if error.returncode != REPLY_TIMEOUT_EXIT or attempt == 2:
                raise
            reason = f"{path.name}: a cell got no reply within {CELL_TIMEOUT} s"
        message = f"{reason}; running it once more (the known kernel-reply hang)"
        print(message, file=sys.stderr)
        warnings.warn(message, KernelReplyTimeout, stacklevel=2)
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


# --- the retry: only the kernel-reply hang --------------------------------------------------
#: A stand-in for `RUNNER`: counts its runs next to the source notebook, exits with the
#: statuses in the environment's FAKE_EXITS, one per run, and on 0 writes the source
#: out as the executed notebook.
FAKE_RUNNER = """
import os, shutil, sys
from pathlib import Path

runs = Path(sys.argv[1]).with_name("runs")
count = len(runs.read_text()) if runs.exists() else 0
runs.write_text("x" * (count + 1))
status = int(os.environ["FAKE_EXITS"].split(",")[count])
if status == 0:
    shutil.copy(sys.argv[1], sys.argv[3])
sys.exit(status)
"""


def _run_fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exits: str) -> nbformat.NotebookNode:
    """`execute_in_subprocess` with `FAKE_RUNNER` exiting with `exits` in turn (the
    notebook it returns; its runs are counted in tmp_path/runs)."""
    monkeypatch.setattr(sys.modules[__name__], "RUNNER", FAKE_RUNNER)
    monkeypatch.setenv("FAKE_EXITS", exits)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    return execute_in_subprocess(notebook, tmp_path / "00_fake.ipynb", tmp_path)


def test_a_failing_notebook_run_fails_at_once(monkeypatch, tmp_path):
    """A cell's error (exit 1) is a real failure: no second run."""
    with pytest.raises(subprocess.CalledProcessError):
        _run_fake(monkeypatch, tmp_path, "1,0")
    assert len((tmp_path / "runs").read_text()) == 1


def test_a_reply_timeout_is_run_once_more_with_a_warning(monkeypatch, tmp_path):
    with pytest.warns(KernelReplyTimeout, match="no reply within 300 s; running it once more"):
        notebook = _run_fake(monkeypatch, tmp_path, f"{REPLY_TIMEOUT_EXIT},0")
    assert len((tmp_path / "runs").read_text()) == 2
    assert notebook.cells[0].source == "1 + 1"


def test_a_reply_timeout_twice_fails(monkeypatch, tmp_path):
    with pytest.warns(KernelReplyTimeout), pytest.raises(subprocess.CalledProcessError):
        _run_fake(monkeypatch, tmp_path, f"{REPLY_TIMEOUT_EXIT},{REPLY_TIMEOUT_EXIT},0")
    assert len((tmp_path / "runs").read_text()) == 2


def _run_runner(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    """`RUNNER` on a one-cell notebook of `source`, with a 5 s cell timeout."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbformat.write(notebook, tmp_path / "one_cell.ipynb")
    command = [sys.executable, "-c", RUNNER, str(tmp_path / "one_cell.ipynb"), str(tmp_path)]
    command += [str(tmp_path / "executed.ipynb"), "5", str(REPLY_TIMEOUT_EXIT)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_runner_tells_a_cell_timeout_from_a_cell_error(tmp_path):
    """A real kernel: a cell that gives no reply within the cell timeout exits with
    `REPLY_TIMEOUT_EXIT` (nbclient's `CellTimeoutError`), a cell that raises with 1."""
    timed_out = _run_runner(tmp_path, "import time\ntime.sleep(60)")
    assert timed_out.returncode == REPLY_TIMEOUT_EXIT, timed_out.stderr
    assert "no reply from the kernel in time" in timed_out.stderr
    failed = _run_runner(tmp_path, "raise ValueError('a real failure')")
    assert failed.returncode == 1 and "a real failure" in failed.stderr
