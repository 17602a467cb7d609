"""Every benchmark script runs: ``benchmarks/bench_*.py --quick`` exits 0 and prints a table.

Each script runs in its own process, as a user would start it, with ``--results``
pointing at a temporary copy of RESULTS.md, so the committed file is never touched.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from solo_lib.data import ensure_builtin_dataset

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCH_DIR / "RESULTS.md"
SCRIPTS = sorted(BENCH_DIR.glob("bench_*.py"))


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_every_benchmark_script_is_found() -> None:
    names = {script.name for script in SCRIPTS}
    expected_scripts = (
        "bench_accuracy.py",
        "bench_latency.py",
        "bench_data.py",
        "bench_train.py",
        "bench_deploy.py",
    )
    for expected in expected_scripts:
        assert expected in names


@pytest.fixture(scope="module")
def quick_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple]:
    """Each selected script's ``--quick`` run: {name: (completed process, RESULTS.md copy,
    its digest)}. Only the scripts whose test runs are started (``-k deploy`` runs
    bench_deploy.py alone), since each takes up to minutes.

    The scripts run two at a time: much of each run is starting Python and importing
    torch, so overlapping them keeps the suite short on a 2-core machine. The built-in
    data set is generated first, once, rather than by several scripts at the same time.
    """

    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_quick_mode_prints_a_table"
    }
    scripts = [script for script in SCRIPTS if script in selected]
    ensure_builtin_dataset()
    folders = {script: tmp_path_factory.mktemp(script.stem) for script in scripts}

    def run(script: Path) -> tuple[str, subprocess.CompletedProcess, Path, str | None]:
        folder = folders[script]
        results = folder / "RESULTS.md"
        if RESULTS.exists():
            shutil.copy(RESULTS, results)
        before = _digest(results)
        done = subprocess.run(
            [sys.executable, str(script), "--quick", "--results", str(results)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=folder,
        )
        return script.name, done, results, before

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {name: rest for name, *rest in pool.map(run, scripts)}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_quick_mode_prints_a_table(script: Path, quick_runs: dict) -> None:
    done, results, before = quick_runs[script.name]
    assert done.returncode == 0, f"{script.name} --quick failed:\n{done.stderr[-4000:]}"
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) >= 3, f"{script.name}: no markdown table (header, rule, row):\n{done.stdout}"
    assert set(table[1].replace("|", "").split()) == {"---"}, table[1]
    # --quick only checks that a script runs: it must not write results, not even to the copy
    assert _digest(results) == before, f"{script.name} --quick wrote {results}"


def test_gpu_script_is_valid_bash() -> None:
    script = BENCH_DIR / "bench_train_gpu.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_peak_memory_of_a_step_excludes_what_the_process_did_before(monkeypatch):
    """bench_data's peak starts afresh before the measured steps: 400 MiB touched and freed
    before the reset (as loading a data set does) must not count, 100 MiB after it must."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import bench_data

    def touch(mib: int) -> None:
        block = bytearray(mib * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # every page resident

    touch(400)
    if not bench_data.reset_peak_resident():
        pytest.skip("no /proc/self/clear_refs: the peak cannot be reset on this system")
    before = bench_data.resident_bytes()
    touch(100)
    increase = (bench_data.peak_resident_bytes() - before) / 2**20
    assert 90 < increase < 300, f"peak increase {increase:.0f} MiB"
