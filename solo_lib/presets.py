"""The preset YAML files of solo_lib/configs/, generated from the Python presets.

`SOLOConfig`'s presets (`solo_lib.config.PRESETS`) are the one source of every preset's
settings, and their docstrings say why each was chosen. The command line reads YAML
(``python -m solo_lib fit --config solo_lib/configs/cpu.yaml``), so each preset has a
complete file there: every ``model.config`` field, the trainer, its callbacks and
logger, the data options. This module writes those files; nobody edits them::

    python -m solo_lib.presets           # rewrite the files that differ from the presets
    python -m solo_lib.presets --check   # exit 1 and name the files that differ

What a file holds besides ``model.config`` is the same for every preset but for what
`PRESET_FILES` gives (header text, trainer precision, built-in data set) and the
logger's name (the preset's). The comments on single settings are in one table,
`COMMENTS`, and hold for every preset. tests/test_presets.py checks that the committed
files are what this module writes and that the command line parses each one back to its
preset, field for field.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from solo_lib.config import PRESETS, SOLOConfig

#: Where the generated files live (package data: pyproject.toml ships configs/*.yaml).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: The command that writes the files, named in their first line and in the test's message.
COMMAND = "python -m solo_lib.presets"


@dataclass(frozen=True)
class PresetFile:
    """What a preset's file holds besides its `SOLOConfig` and the settings all files share."""

    header: str
    """What the preset is, for the file's first comment lines (after the generated notice)."""
    precision: str | None = None
    """``trainer.precision``; None: the machine's fastest (`solo_lib.hardware`)."""
    builtin: str = "objects"
    """``data.builtin``: the built-in data set that the preset trains on by default."""


#: Per preset: its header text, trainer precision and built-in data set.
PRESET_FILES: dict[str, PresetFile] = {
    "cpu": PresetFile(
        "SOLO, cpu preset: ResNet-10 at a quarter width, Decoupled SOLO heads, 256x352, "
        "trains on a 2-core CPU in 20 minutes (a time budget)."
    ),
    "dense": PresetFile(
        "SOLO, dense preset: the cpu preset on the built-in dense set (one class of small "
        "touching cells),\nwith the paper's grids and mask AP every fourth epoch, in a "
        "9-minute budget.",
        builtin="dense",
    ),
    "gpu": PresetFile(
        "SOLO, gpu preset: the cpu preset's recipe grown for one GPU (batch 16, ResNet-18, "
        "64-channel FPN and heads,\n12 loader workers) in a 9.5-minute budget, so that a run "
        "with data generation fits in 10 minutes."
    ),
    "paper": PresetFile(
        "SOLO, paper preset: ResNet-50 at 800x1088, the 36-epoch schedule of the SOLO paper "
        "(one GPU).",
        precision="bf16-mixed",
    ),
    "solov2_cpu": PresetFile(
        "SOLOv2, cpu preset: the cpu preset's trunk, FPN, input, grids and schedule with "
        "SOLOv2's dynamic head\n(each cell predicts a 1x1 kernel applied to one unified mask "
        "feature map, E = 32 channels)."
    ),
    "solov2_paper": PresetFile(
        "SOLOv2, paper preset: the SOLO paper preset's input, trunk and schedule with "
        "SOLOv2's official head\n(4 x 512-channel category and kernel convs, E = 256; "
        "SOLOv2-Light: head_channels 256, kernel_channels 128).",
        precision="bf16-mixed",
    ),
}

#: Comments on single settings, by dotted path: after the value on its line, or, for an
#: item of a list (``trainer.callbacks[1]``), on the lines above it. Each holds for every
#: preset; `SOLOConfig`'s docstrings say more about each field.
COMMENTS: dict[str, str] = {
    "model.config.category_ids": "COCO category ids of labels 1..C; filled from a COCO "
    "training file",
    "model.config.copy_paste_prob": "Simple Copy-Paste between the images of a training "
    "batch (0: off)",
    "model.config.mask_head": "vanilla (the paper's S^2 mask channels per level) or decoupled "
    "(Decoupled SOLO: mask(i, j) = sigmoid(X_j) * sigmoid(Y_i)); SOLO only",
    "model.config.head": "solo | solov2 (SOLOv2: a dynamic 1x1 kernel per cell on unified "
    "mask features)",
    "model.config.kernel_channels": "SOLOv2 only: E, the mask features' channels = a "
    "dynamic kernel's length",
    "model.config.mask_branch_channels": "SOLOv2 only: width of the unified mask feature branch",
    "model.config.num_grids": "S per level; `python -m solo_lib analyse` counts the objects "
    "they leave without a cell",
    "model.config.mask_threshold": "0.5 in the paper; Decoupled SOLO masks are a product of "
    "two probabilities, and 0.5 cuts their outlines (0.4)",
    "model.config.min_mask_area": "masks of at most this many pixels (level-0 mask size) are "
    "dropped; null: the level's stride, as SOLO's code",
    "model.config.base_lr": "for base_batch_size images; scaled linearly to devices x batch_size",
    "model.config.max_epochs": "null: no cap, the time budget alone sets the number of "
    "epochs (with a budget, a number here caps it)",
    "model.config.time_budget_min": "minutes of training, into which the epochs are fitted; "
    "null: max_epochs exactly",
    "trainer.max_time": "null: no wall-clock stop; model.config.time_budget_min fits the "
    "epochs to a budget instead",
    "trainer.precision": "null: bf16-mixed on a GPU with bf16 or a CPU with bf16 "
    "instructions (AMX, avx512_bf16), else 32-true (solo_lib/hardware.py)",
    "trainer.callbacks[1]": "last.ckpt after every epoch, to resume from (save_last above "
    "writes it only when\nthe best changes, since Lightning 2.6)",
    "data.root": "null: the built-in data set, generated into data/builtin on first use",
    "data.builtin": 'with root null: "objects" (the course\'s set) or "dense" (small '
    "touching cells, 1 class)",
    "data.format": "cis680 (four-file h5/npy format) or coco (root = image folder)",
    "data.val_root": "with val_annotation_file: a separate COCO validation set (no random split)",
    "data.predict_dir": "a folder of images for `predict`; null predicts on the validation split",
}


def settings(name: str) -> dict[str, Any]:
    """Everything that solo_lib/configs/`name`.yaml sets, as plain YAML types (tuples as lists).

    ``model.config`` is `SOLOConfig.preset(name)`, all of its fields; the rest is shared
    by every preset but for `PRESET_FILES[name]` and the logger's name.
    """
    if name not in PRESET_FILES:
        raise ValueError(f"preset {name!r} has no entry in PRESET_FILES (solo_lib/presets.py)")
    extra = PRESET_FILES[name]
    config = {
        field: list(value) if isinstance(value, tuple) else value
        for field, value in dataclasses.asdict(SOLOConfig.preset(name)).items()
    }
    checkpoint = "pytorch_lightning.callbacks.ModelCheckpoint"
    return {
        "model": {"config": config},
        "trainer": {
            "accelerator": "auto",
            "devices": 1,
            "max_time": None,
            "precision": extra.precision,
            "log_every_n_steps": 10,
            "plugins": [{"class_path": "solo_lib.checkpointing.AtomicCheckpointIO"}],
            "logger": {
                "class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": "runs", "name": name},
            },
            "callbacks": [
                {
                    "class_path": checkpoint,
                    "init_args": {
                        "monitor": "val/AP",
                        "mode": "max",
                        "filename": "best-epoch{epoch:02d}",
                        "auto_insert_metric_name": False,
                    },
                },
                {
                    "class_path": checkpoint,
                    "init_args": {
                        "filename": "last",
                        "enable_version_counter": False,
                        "save_on_train_epoch_end": True,
                    },
                },
                {
                    "class_path": "pytorch_lightning.callbacks.LearningRateMonitor",
                    "init_args": {"logging_interval": "step"},
                },
            ],
        },
        "data": {
            "root": None,
            "builtin": extra.builtin,
            "format": "cis680",
            "annotation_file": None,
            "val_root": None,
            "val_annotation_file": None,
            "predict_dir": None,
        },
    }


def render(name: str) -> str:
    """The text of solo_lib/configs/`name`.yaml: a header, then `settings(name)` with
    `COMMENTS`."""
    header = [
        f"Generated from SOLOConfig.{name}() (solo_lib/config.py) by `{COMMAND}`: do not "
        "edit by hand.",
        *PRESET_FILES[name].header.split("\n"),
        f"  python -m solo_lib fit --config solo_lib/configs/{name}.yaml",
        "Override any field on the command line, e.g. --model.config.max_epochs 4",
        "The trainer's max_epochs and the global seed follow model.config (linked in "
        "solo_lib/cli.py).",
    ]
    lines = [f"# {line}" for line in header]
    lines += _mapping_lines(settings(name), path="", indent="")
    return "\n".join(lines) + "\n"


def _scalar(value: object) -> str:
    """`value` (a number, string, None, bool or flat list) as one line of YAML, flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, width=sys.maxsize).strip()
    return text.removesuffix("\n...").strip()


def _comment_above(path: str, indent: str) -> list[str]:
    """`COMMENTS[path]` as whole comment lines at `indent`; none without one."""
    comment = COMMENTS.get(path)
    return [f"{indent}# {line}" for line in comment.split("\n")] if comment else []


def _mapping_lines(mapping: Mapping[str, Any], path: str, indent: str) -> list[str]:
    """Block-style YAML of `mapping` at `indent`, flat lists in flow style, each key's
    `COMMENTS` entry (by its dotted path under `path`) after its value."""
    lines = []
    for key, value in mapping.items():
        here = f"{path}.{key}" if path else key
        comment = f"  # {COMMENTS[here]}" if here in COMMENTS else ""
        if isinstance(value, Mapping):
            lines += [f"{indent}{key}:{comment}", *_mapping_lines(value, here, indent + "  ")]
        elif isinstance(value, Sequence) and any(isinstance(v, Mapping) for v in value):
            lines.append(f"{indent}{key}:{comment}")
            for i, item in enumerate(value):  # "- " two spaces in, the item's keys four
                lines += _comment_above(f"{here}[{i}]", indent + "  ")
                first, *rest = _mapping_lines(item, f"{here}[{i}]", indent + "    ")
                lines += [f"{indent}  - {first.lstrip()}", *rest]
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}{comment}")
    return lines


def stale_files(config_dir: Path = CONFIG_DIR) -> list[str]:
    """What in `config_dir` differs from the presets: each preset's file that is missing or
    not what `render` writes, and each YAML file that belongs to no preset."""
    stale = []
    for name in PRESETS:
        path = config_dir / f"{name}.yaml"
        if not path.exists():
            stale.append(f"{path.name} (missing)")
        elif path.read_text() != render(name):
            stale.append(f"{path.name} (not what SOLOConfig.{name}() generates)")
    stale += [
        f"{path.name} (no preset of that name)"
        for path in sorted(config_dir.glob("*.yaml"))
        if path.stem not in PRESETS
    ]
    return stale


def write_files(config_dir: Path = CONFIG_DIR) -> list[Path]:
    """Write every preset's file into `config_dir` where it differs; returns those written."""
    written = []
    for name in PRESETS:
        path, text = config_dir / f"{name}.yaml", render(name)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def main(args: Sequence[str] | None = None) -> int:
    """`python -m solo_lib.presets [--check]`; returns the exit status (1: stale files)."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name the files that differ from the presets",
    )
    options = parser.parse_args(args)
    if not options.check:
        for path in write_files(CONFIG_DIR):
            print(f"wrote {path}")
    stale = stale_files(CONFIG_DIR)
    for entry in stale:
        print(f"{CONFIG_DIR}/{entry}", file=sys.stderr)
    if stale:
        print(
            f"{len(stale)} file(s) out of step with the presets: `{COMMAND}` rewrites the "
            "presets' files; a file of no preset is for you to delete",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
