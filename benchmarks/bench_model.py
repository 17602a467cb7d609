"""Size and speed of the SOLO network: parameter counts and forward time per preset.

For each preset: parameters (backbone + FPN, head, total); the size of the outputs one
image produces, with every cell's mask made (``SOLO.forward``: the S^2 mask channels
dominate, SOLO's known memory cost) and as inference returns them (``SOLO.mask_makers``:
category logits and the tensors masks are made from, what the ONNX graph outputs); and
the median time of each at batch 1 over ``--repeats`` runs after ``--warmup`` untimed
ones, in eval mode under ``torch.no_grad`` (no data loading: the input is a random
tensor already on the device).

    python benchmarks/bench_model.py            # both presets on the CPU
    python benchmarks/bench_model.py --device cuda
    python benchmarks/bench_model.py --quick    # smoke test: 128x160 input, 2 repeats
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

import common
import torch

from solo_lib.config import SOLOConfig
from solo_lib.model import SOLO

SECTION = "bench_model"


def millions(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


def output_megabytes(model: SOLO, images: torch.Tensor) -> tuple[float, float]:
    """MB of the outputs for one image of this size: every cell's mask made (category and
    mask logits, all levels), and category logits with the mask makers' tensors."""
    with torch.no_grad():
        dense = model(images[:1])
        parts = model.mask_makers(images[:1])
    made = dense.category + dense.masks
    makers = parts.category + [t for maker in parts.makers for t in maker.tensors()]
    return tuple(sum(t.numel() * t.element_size() for t in ts) / 1e6 for ts in (made, makers))


def measure(cfg: SOLOConfig, device: torch.device, repeats: int, warmup: int) -> list[str]:
    """One table row for `cfg`: sizes, parameters and the median forward time in ms."""
    torch.manual_seed(cfg.seed)
    model = SOLO(cfg).to(device).eval()
    images = torch.randn(1, 3, *cfg.image_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    with torch.no_grad():
        dense_ms = common.time_ms(lambda: model(images), repeats, warmup, sync)
        makers_ms = common.time_ms(lambda: model.mask_makers(images), repeats, warmup, sync)
    dense_mb, makers_mb = output_megabytes(model, images)
    return [
        cfg.name,
        f"{cfg.image_size[0]}x{cfg.image_size[1]}",
        f"ResNet-{cfg.backbone_depth}",
        millions(model.backbone),
        millions(model.head),
        millions(model),
        f"{dense_mb:.1f}",
        f"{makers_mb:.1f}",
        f"{common.median(dense_ms):.0f}",
        f"{common.median(makers_ms):.0f}",
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets", nargs="+", default=["cpu", "paper"], choices=["cpu", "gpu", "paper"]
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed forward passes (default: 10)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes first (default: 2)")
    common.add_common_arguments(parser, quick_help="smoke test: both presets at 128x160, 2 repeats")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    rows = []
    for preset in args.presets:
        cfg = SOLOConfig.preset(preset)
        if args.quick:
            cfg = cfg.replace(image_size=(128, 160))
        rows.append(measure(cfg, device, repeats, warmup))
    header = [
        "preset",
        "input",
        "backbone",
        "backbone + FPN",
        "head",
        "total params",
        "every mask made, MB / image",
        "mask makers, MB / image",
        "every mask made, ms",
        "mask makers, ms",
    ]
    notes = (
        f"Forward pass on {args.device}, {args.threads} threads, batch 1, eval mode, no_grad; "
        f"median of {repeats} runs after {warmup} warm-up runs. Parameters: millions. "
        "Every mask made: `SOLO.forward`, every cell's mask logits; mask makers: "
        "`SOLO.mask_makers`, what inference runs (the candidates' masks are made after). "
        "Command: "
        f"`python benchmarks/bench_model.py {shlex.join(sys.argv[1:] if argv is None else argv)}`."
    )
    common.report(
        common.section_for(SECTION, device),
        "Model size and forward time",
        header,
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
