"""A YAML run config like solo_lib/configs/cpu.yaml, for the command-line tests."""

import dataclasses
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
