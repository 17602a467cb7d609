"""What every benchmark script shares: timing, the machine's description, RESULTS.md sections.

Run a benchmark as ``python benchmarks/<script>.py``: Python then puts this folder on
``sys.path`` and ``import common`` finds this module; importing it also puts the
repository root on ``sys.path``, so ``solo_lib`` imports even without an install.

Each script owns one section of RESULTS.md, between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``, and rewrites only that section (atomically, under a lock on this folder,
so that scripts run side by side do not undo each other's sections).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_PATH = BENCH_DIR / "RESULTS.md"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from solo_lib.atomic import atomic_file  # noqa: E402  (after the path set-up above)


def median(values: Sequence[float]) -> float:
    """The median of `values` (ValueError if empty)."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def time_ms(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> list[float]:
    """Milliseconds of `repeats` calls of `fn` after `warmup` untimed calls.

    `sync` (for example ``torch.cuda.synchronize``) runs before each clock read, so
    that queued device work is counted.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return times


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> str:
    """One line: CPU model and cores, torch threads and version, GPU if any, date (UTC)."""
    import torch

    parts = [
        f"CPU: {cpu_model()} ({os.cpu_count()} cores visible)",
        f"torch threads: {torch.get_num_threads()}",
        f"torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name()}")
    parts.append(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    return "; ".join(parts)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (no lock file left behind) while the block runs."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def rewrite_section(path: str | Path, section: str, body: str) -> None:
    """Replace the text between the markers of `section` in `path` with `body`.

    Appends the section (markers included) when the file lacks it, creates the file if
    needed; the rest of the file is kept byte for byte.
    """
    path = Path(path)
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    with _locked(path.parent):
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        if start in text and end in text and text.index(start) < text.index(end):
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
        elif start in text or end in text:
            raise ValueError(f"{path}: markers of section {section!r} are unpaired or out of order")
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        with atomic_file(path, mode=mode) as tmp:
            tmp.write_text(text)


def report(
    section: str,
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    notes: str,
    results: str | Path = RESULTS_PATH,
    quick: bool = False,
) -> str:
    """Print a results table and, unless `quick`, rewrite its section of `results`.

    Returns the section's markdown: a title, the machine, the table and `notes`.
    """
    body = f"## {title}\n\n{machine_info()}\n\n{markdown_table(header, rows)}\n\n{notes.strip()}\n"
    print(body)
    if quick:
        print(f"(--quick: {results} left unchanged)")
    else:
        rewrite_section(results, section, body)
        print(f"updated section {section!r} of {results}")
    return body


def section_for(section: str, device: torch.device) -> str:
    """The RESULTS.md section of a script's run on `device`: GPU runs get their own
    section (``<section>_cuda``), so that they do not replace the CPU numbers."""
    return section if device.type == "cpu" else f"{section}_{device.type}"


def add_common_arguments(
    parser: argparse.ArgumentParser, quick_help: str, threads: int | None = None
) -> None:
    """The options every benchmark shares: ``--threads``, ``--results`` and ``--quick``.

    `threads` is the default thread count (None: torch's current one).
    """
    import torch

    default = torch.get_num_threads() if threads is None else threads
    parser.add_argument(
        "--threads", type=int, default=default, help=f"torch threads (default: {default})"
    )
    parser.add_argument("--results", default=str(RESULTS_PATH), help="RESULTS.md to update")
    parser.add_argument("--quick", action="store_true", help=quick_help)
