"""The mask AP a perfect network could reach on the built-in validation set, per geometry.

The targets are turned into the logits of a network that predicts them exactly
(`solo_lib.analysis.perfect_output`) and scored like a trained model: post-processing,
then mask AP against the original annotations (`solo_lib.analysis.ceiling`). What is
lost here is lost to the geometry (input size, strides: the mask resolution of each
level) and to the inference settings, before any learning: the cpu preset's masks of
its two coarsest levels are at stride 16, too coarse for a tight IoU.

Geometries: the cpu preset, finer strides, and a larger input.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence

import common
import torch
from bench_train import quick_config, tiny_dataset

from solo_lib.analysis import ceiling
from solo_lib.config import SOLOConfig
from solo_lib.data import ensure_builtin_dataset
from solo_lib.data.datamodule import SOLODataModule

SECTION = "bench_ceiling"
#: name -> changes to the cpu preset
GEOMETRIES: dict[str, dict] = {
    "cpu preset": {},
    "level 0 at stride 4": {"strides": (4, 8, 16, 32, 32)},
    "all levels at half the stride": {"strides": (4, 4, 8, 16, 16)},
    "320x448 input": {"image_size": (320, 448)},
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser, quick_help="smoke test: shrunk preset, tiny data set")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # Perfect masks are exact 0/1 at each level's size: cut them at the midpoint, 0.5, so
    # that the ceiling measures the geometry alone (the preset's 0.4 suits soft masks).
    base = SOLOConfig.cpu().replace(mask_threshold=0.5)
    geometries = GEOMETRIES
    if args.quick:
        base, geometries = quick_config(base), {"cpu preset": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = tiny_dataset(tmp) if args.quick else ensure_builtin_dataset()
        for name, changes in geometries.items():
            cfg = base.replace(**changes)
            data = SOLODataModule(cfg, root=str(root))
            data.setup("validate")
            result = ceiling(data.val_dataloader(), cfg)
            mask_sizes = ", ".join("x".join(map(str, cfg.mask_size(i))) for i in (0, 4))
            rows.append(
                [name, f"{cfg.image_size[0]}x{cfg.image_size[1]}", str(cfg.strides), mask_sizes]
                + [f"{float(result[k]):.3f}" for k in ("AP", "AP50", "AP75")]
            )
    header = ["geometry", "input", "strides", "mask size (level 0, 4)", "AP", "AP50", "AP75"]
    notes = (
        "The validation split of the built-in data set (200 images); the targets as a "
        "network's output (probability 1 on every positive cell and target mask pixel, 0 "
        "elsewhere), the preset's post-processing, mask AP against the original "
        "annotations. The most a trained model with that geometry can reach. "
        "Command: `python benchmarks/bench_ceiling.py`."
    )
    title = "Ceiling: the AP of a perfect network"
    common.report(SECTION, title, header, rows, notes, args.results, args.quick)


if __name__ == "__main__":
    main()
