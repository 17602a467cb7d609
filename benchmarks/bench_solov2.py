"""SOLO against SOLOv2 at both presets: training step, peak memory and inference per stage (cpu).

One run, one machine, four networks: SOLO and SOLOv2 at the cpu preset (256x352, the
20-minute budget's) and at the paper preset (800x1088). Each pair shares its trunk,
FPN, input, grids and post-processing; only the head differs (`SOLOConfig.head`).

* params: the whole network and its head;
* training step: median seconds of ``--steps`` steps after one warm-up step, at the
  preset's batch (4 for the cpu presets, ``--paper-batch`` for the paper presets),
  batches in memory (`bench_train.measure`);
* peak memory: the maximum resident set size of a fresh process over two training
  steps, and its increase over the process's size before them (`bench_data`);
* inference per stage at batch 1 (`bench_deploy`'s staged pipeline, PyTorch eager):
  backbone + FPN, heads (with the sigmoids), post-processing (points NMS, thresholds,
  Matrix NMS, masks back to the original size, RLE), and end to end from the PNG file.
  At the cpu presets the trained checkpoints of README's jobs are used when they exist
  (``runs/cpu``, ``runs/solov2_cpu``: the best validation AP), so that the
  post-processing handles a trained model's candidates; without one, and at the paper
  presets (no trained paper model exists on a CPU), the untrained network: its category
  prior keeps almost every cell below the score threshold, so its post-processing
  times are a lower bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import bench_data
import common
import torch
from bench_deploy import best_checkpoint, time_solo, torch_stages, validation_folder
from bench_latency import fmt
from bench_train import default_batch, measure, quick_config, tiny_dataset

from solo_lib.config import SOLOConfig
from solo_lib.data import ensure_builtin_dataset
from solo_lib.data.folder import ImageFolderDataset
from solo_lib.model import SOLO
from solo_lib.module import LitSOLO

SECTION = "bench_solov2"
MIB = 2**20

#: (scale, SOLO's preset, SOLOv2's preset)
PAIRS = (("cpu", "cpu", "solov2_cpu"), ("paper", "paper", "solov2_paper"))

#: Post-processing stages of `bench_deploy.solo_image`, summed into one column.
POSTPROCESS = ("candidates + their masks", "Matrix NMS", "masks to original", "RLE")


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_model(preset: str, quick: bool) -> tuple[SOLO, str]:
    """The network whose inference is timed: the trained checkpoint of `preset`'s runs
    (``runs/<preset>``) if there is one, else the untrained network (seeded)."""
    cfg = SOLOConfig.preset(preset)
    if quick:
        cfg = quick_config(cfg)
    else:
        try:
            path = best_checkpoint(common.REPO_ROOT / "runs" / cfg.name)
        except FileNotFoundError:
            pass
        else:
            lit = LitSOLO.load_from_checkpoint(path, map_location="cpu", weights_only=True)
            return lit.model.eval(), f"trained ({path.relative_to(common.REPO_ROOT)})"
    torch.manual_seed(cfg.seed)
    return SOLO(cfg).eval(), "untrained"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", nargs="+", default=["cpu", "paper"], choices=["cpu", "paper"])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default: 5)")
    parser.add_argument(
        "--paper-batch", type=int, default=default_batch("paper", torch.device("cpu")),
        help="training batch of the paper presets (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--images", type=int, default=20, help="validation images (default: 20)")
    parser.add_argument("--passes", type=int, default=2, help="timed passes (default: 2)")
    common.add_common_arguments(
        parser, quick_help="smoke test: both cpu presets shrunk (96x128), 1 step, 2 images"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    scales, steps, images, passes = args.scales, args.steps, args.images, args.passes
    if args.quick:
        scales, steps, images, passes = ["cpu"], 1, 2, 1
    device = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = tiny_dataset(tmp, 8) if args.quick else Path(ensure_builtin_dataset())
        for scale, *presets in PAIRS:
            if scale not in scales:
                continue
            for preset in presets:
                model, source = inference_model(preset, args.quick)
                cfg = model.cfg
                batch = args.paper_batch if scale == "paper" else cfg.batch_size
                train_cfg = cfg.replace(batch_size=1 if args.quick else batch)
                step = measure(train_cfg, root, device, False, steps, warmup=1)
                memory = bench_data.measure_in_subprocess(
                    {
                        "config": dataclasses.asdict(train_cfg),
                        "device": "cpu",
                        "amp": False,
                        "threads": args.threads,
                        "root": str(root),
                        "steps": 2,
                    }
                )
                folder = validation_folder(
                    cfg, root if args.quick else None, images, Path(tmp) / f"{preset}_images"
                )
                dataset = ImageFolderDataset(folder, cfg)
                timed = time_solo(torch_stages(model, compiled=False), dataset, cfg, passes, 1)
                clock = timed["clock"]
                rows.append(
                    [
                        f"{'SOLOv2' if cfg.head == 'solov2' else 'SOLO'} ({cfg.name})",
                        f"{cfg.image_size[0]}x{cfg.image_size[1]}",
                        f"{count_params(model) / 1e6:.2f} M ({count_params(model.head) / 1e6:.2f} M)",
                        f"{step['step_s']:.2f} (batch {train_cfg.batch_size})",
                        f"{memory['peak'] / MIB:.0f} (+{(memory['peak'] - memory['before']) / MIB:.0f})",
                        fmt(clock.mean("backbone + FPN")),
                        fmt(clock.mean("heads")),
                        fmt(sum(clock.mean(stage) or 0.0 for stage in POSTPROCESS)),
                        fmt(clock.mean("end to end")),
                        f"{timed['candidates']:.0f}",
                        source,
                    ]
                )
    header = [
        "network",
        "input",
        "params (head)",
        "training step s",
        "training peak MiB (increase)",
        "backbone + FPN ms",
        "heads ms",
        "post-processing ms",
        "end to end ms",
        "to Matrix NMS",
        "weights",
    ]
    command = shlex.join(sys.argv[1:] if argv is None else list(argv))
    notes = (
        f"Training step: median of {steps} steps after 1 warm-up step, fp32, batches in "
        "memory. Peak memory: maximum resident set size of a fresh process over 2 training "
        "steps (increase over its size before them). Inference: batch 1, PyTorch eager, fp32, "
        f"no_grad, mean ms per image over {passes} passes of {images} validation PNG files "
        "after 1 warm-up image; end to end from the file (decode, resize, network, "
        "post-processing, RLE). To Matrix NMS: mean candidates per image that reached it. "
        f"{args.threads} threads."
        f"\n\nCommand: `python benchmarks/bench_solov2.py {command}`."
    )
    common.report(
        SECTION,
        "SOLO against SOLOv2: training step, peak memory, inference per stage (cpu)",
        header,
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
