"""The command-line tests' run configs (YAML like solo_lib/configs/cpu.yaml, a budgeted
config) and their way of starting ``python -m solo_lib`` in another process."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import yaml

from solo_lib.config import SOLOConfig
from solo_lib.paths import REPO_ROOT


def write_config(
    tmp_path: Path, cfg: SOLOConfig, data_dir: Path, callbacks: list | None = None, **trainer
) -> Path:
    """Write cpu.yaml with `cfg` as the model's config, `data_dir` as the data and the logs
    under `tmp_path`; `callbacks` ({class_path, init_args} dicts) are added to the preset's,
    and `trainer` overrides trainer settings. Returns the file's path."""
    base = yaml.safe_load((REPO_ROOT / "solo_lib" / "configs" / "cpu.yaml").read_text())
    base["model"]["config"] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()
    }
    base["data"]["root"] = str(data_dir)
    base["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    base["trainer"]["enable_progress_bar"] = False
    base["trainer"]["precision"] = "32-true"  # the same numbers on every machine
    base["trainer"]["log_every_n_steps"] = 1
    base["trainer"]["callbacks"] += callbacks or []
    base["trainer"].update(trainer)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def budget_config(cfg: SOLOConfig, minutes: float, every: int = 2) -> SOLOConfig:
    """`cfg` under a time budget of `minutes`, as the presets: no epoch cap, a cosine without
    warm-up (so that the rates are easy to derive), mask AP every `every` epochs."""
    return cfg.replace(
        max_epochs=None,
        time_budget_min=minutes,
        lr_schedule="cosine",
        lr_milestones=(),
        warmup_iters=0,
        map_every_n_epochs=every,
    )


def solo(*args: str, **popen) -> subprocess.Popen:
    """``python -m solo_lib ARGS`` from the repository root, output and errors in one pipe;
    `tests/support` is importable there too (its callbacks are named in the configs)."""
    support = Path(__file__).parent
    env = os.environ | {"PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{support}"}
    return subprocess.Popen(
        [sys.executable, "-m", "solo_lib", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )
