"""Where the course keeps its data, runs and checkpoints: one place for every path."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the folder that holds `solo_lib/` and `notebooks/`).
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Data root; `SOLO_DATA_DIR` moves it (for example to a bigger disk).
DATA_DIR = Path(os.environ.get("SOLO_DATA_DIR", REPO_ROOT / "data"))

#: The built-in synthetic data set, generated on first use.
BUILTIN_DATA_DIR = DATA_DIR / "builtin"

#: Training runs: logs and checkpoints, one sub-folder per run.
RUNS_DIR = Path(os.environ.get("SOLO_RUNS_DIR", REPO_ROOT / "runs"))

#: The course's reference runs (one folder per job, kept in the repository): the trained
#: models the notebooks show before the learner has trained one (`solo_lib.reference`).
REFERENCE_DIR = REPO_ROOT / "reference"
