"""Inference of a trained SOLO from image file to RLE, per stage: eager, torch.compile, onnxruntime.

Batch 1, on the CPU, on real validation images of the built-in set: the validation split
of the checkpoint's own training run (its seed and fraction), written as PNG files and
read back as ``python -m solo_lib predict --data.predict_dir`` reads a folder. The model
is the trained cpu-preset checkpoint with the best validation mask AP under
``runs/cpu/version_*/checkpoints`` (or ``--ckpt``). Each image goes through:

1. pre-processing: PNG decode, normalise, resize to fit, pad (`ImageFolderDataset`);
2. backbone + FPN;
3. heads: the category branch and its sigmoid, the mask branch up to its mask makers
   (no mask made yet);
4. candidates: `points_nms`, `select_cells` (the score threshold, then the candidates'
   masks, made for those cells only), `rescore_by_maskness`;
5. Matrix NMS: `suppress`;
6. masks back to the original size: `masks_to_original`;
7. RLE: `to_coco_results`, what ``results.json`` holds.

Three runtimes share stages 1 and 4-7 (the library's code); they differ in 2-3:
PyTorch eager; ``torch.compile`` of the backbone and of the head (its failure, if any,
is reported, not hidden); onnxruntime running the exported graph (`solo_lib.export`),
which holds stages 2-3 as one graph, so only their sum is timed. Before timing, the
staged pipeline is checked against `postprocess` on one image: the same instances.

Mask R-CNN R50-FPN (torchvision, ``weights=None``: untrained, no weights are
downloaded) runs at the same input size on the same images: the same pre-processing,
its eval-mode forward (RPN, RoI heads and their NMS, mask head, masks pasted into the
input frame), the same resize to the original frame and RLE. Being untrained, it keeps
its maximum of 100 detections; its timings say what its structure costs, not what a
trained Mask R-CNN would find.

Times are means per image in ms over every image of every timed pass, after untimed
warm-up images; end to end is timed around the whole pipeline, not summed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import common
import numpy as np
import torch
from bench_latency import build_maskrcnn_r50, fmt
from bench_train import quick_config, tiny_dataset
from PIL import Image

from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.data.folder import ImageFolderDataset
from solo_lib.export import OnnxSOLO, export_onnx
from solo_lib.model import SOLO
from solo_lib.model.solo import SOLOParts
from solo_lib.module import LitSOLO
from solo_lib.postprocess import (
    image_masks,
    masks_to_original,
    points_nms,
    postprocess,
    rescore_by_maskness,
    select_cells,
    suppress,
)
from solo_lib.prediction import to_coco_results

SECTION = "bench_deploy"

#: The stages of a SOLO prediction, in order: the table's columns.
STAGES = (
    "pre-processing",
    "backbone + FPN",
    "heads",
    "network",
    "candidates + their masks",
    "Matrix NMS",
    "masks to original",
    "RLE",
)

#: A network from the input (1, 3, H, W) to per-level category probabilities and mask
#: makers, as named stages run one after the other (each takes what the previous returned).
NetworkStages = list[tuple[str, Callable]]


class StageClock:
    """Milliseconds per named stage, collected over many images (only while `timing`)."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.timing = False

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as one run of stage `name`."""
        start = time.perf_counter()
        yield
        if self.timing:
            self.ms[name].append(1000 * (time.perf_counter() - start))

    def mean(self, name: str) -> float | None:
        """The mean ms of stage `name`, None if it never ran."""
        return float(np.mean(self.ms[name])) if self.ms.get(name) else None


def best_checkpoint(runs: Path) -> Path:
    """The checkpoint with the best validation score under ``runs/version_*/checkpoints``:
    the file that a run's ModelCheckpoint kept as its best (``best_model_path``; not
    ``last.ckpt``, which stores the same best score beside the last weights)."""
    scored = []
    for path in sorted(runs.glob("version_*/checkpoints/*.ckpt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        for key, state in checkpoint.get("callbacks", {}).items():
            if not key.startswith("ModelCheckpoint") or state.get("best_model_score") is None:
                continue
            best = path.parent / Path(state.get("best_model_path") or "").name
            if best.is_file():
                scored.append((float(state["best_model_score"]), str(best)))
    if not scored:
        raise FileNotFoundError(
            f"no checkpoint with a validation score under {runs}/version_*/checkpoints; train "
            "one (python -m solo_lib fit --config solo_lib/configs/cpu.yaml) or pass --ckpt"
        )
    return Path(max(scored)[1])


def validation_folder(
    cfg: SOLOConfig, root: Path | None, count: int, folder: Path, builtin: str = "objects"
) -> Path:
    """The first `count` images of `cfg`'s validation split of the CIS 680 set in `root`
    (None: the built-in set `builtin`), written into `folder` as PNG files; returns `folder`."""
    data = SOLODataModule(cfg, root=None if root is None else str(root), builtin=builtin)
    data.prepare_data()
    data.setup()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(count, len(data.val_dataset))):
        image, _ = data.val_dataset.load_raw(i)  # uint8 (3, H0, W0)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"val{i:04d}.png")
    return folder


def torch_stages(model: SOLO, compiled: bool) -> NetworkStages:
    """SOLO's network in two stages, backbone + FPN and heads (category probabilities and
    mask makers); `compiled`: each part through ``torch.compile``."""
    backbone = torch.compile(model.backbone) if compiled else model.backbone
    makers = torch.compile(model.head.mask_makers) if compiled else model.head.mask_makers

    def run_heads(features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list]:
        parts = SOLOParts(*makers(features))
        return parts.category_probabilities(), parts.makers

    return [
        ("backbone + FPN", lambda x: backbone(x.contiguous(memory_format=model.memory_format))),
        ("heads", run_heads),
    ]


def solo_image(
    network: NetworkStages,
    dataset: ImageFolderDataset,
    i: int,
    cfg: SOLOConfig,
    clock: StageClock,
) -> tuple[dict, int]:
    """Image `i` of `dataset` from file to RLE entries, each stage on `clock`.

    Returns the prediction (masks at the original size, labels, scores) and the number
    of candidates that reached Matrix NMS.
    """
    with clock.stage("end to end"):
        with clock.stage("pre-processing"):
            image, meta = dataset[i]
            value = image[None]  # (1, 3, H, W)
        for name, run in network:
            with clock.stage(name):
                value = run(value)
        category, makers = value  # per level (1, C, S, S) and a mask maker
        with clock.stage("candidates + their masks"):
            peaks = [points_nms(probs)[0] for probs in category]
            candidates = select_cells(peaks, [image_masks(maker, 0) for maker in makers], cfg)
            candidates = rescore_by_maskness(candidates, cfg)
        reaching_nms = len(candidates.scores)
        with clock.stage("Matrix NMS"):
            candidates = suppress(candidates, cfg)
        with clock.stage("masks to original"):
            original = masks_to_original(candidates.masks, meta["geometry"], cfg)
        prediction = {"masks": original, "labels": candidates.labels, "scores": candidates.scores}
        with clock.stage("RLE"):
            to_coco_results(prediction, i, cfg.category_ids, meta["file_name"])
    return prediction, reaching_nms


def check_stages(network: NetworkStages, dataset: ImageFolderDataset, cfg: SOLOConfig) -> None:
    """The staged pipeline gives `postprocess`'s instances on image 0 (else AssertionError)."""
    staged, _ = solo_image(network, dataset, 0, cfg, StageClock())
    image, meta = dataset[0]
    value = image[None]
    for _, run in network:
        value = run(value)
    (expected,) = postprocess(*value, [meta], cfg)
    assert torch.equal(staged["labels"], expected["labels"]), "staged labels differ"
    assert torch.equal(staged["scores"], expected["scores"]), "staged scores differ"
    assert torch.equal(staged["masks"], expected["masks"]), "staged masks differ"


def time_solo(
    network: NetworkStages, dataset: ImageFolderDataset, cfg: SOLOConfig, passes: int, warmup: int
) -> dict:
    """Mean ms per stage over `passes` passes of `dataset` after `warmup` untimed images;
    the mean candidates reaching Matrix NMS and instances out per image."""
    clock, candidates, instances = StageClock(), [], []
    with torch.no_grad():
        for i in range(warmup):
            solo_image(network, dataset, i % len(dataset), cfg, clock)
        clock.timing = True
        for _ in range(passes):
            for i in range(len(dataset)):
                prediction, reaching_nms = solo_image(network, dataset, i, cfg, clock)
                candidates.append(reaching_nms)
                instances.append(len(prediction["scores"]))
    return {"clock": clock, "candidates": np.mean(candidates), "instances": np.mean(instances)}


def time_maskrcnn(
    dataset: ImageFolderDataset, cfg: SOLOConfig, passes: int, warmup: int, quick: bool
) -> dict:
    """Mask R-CNN R50-FPN (untrained) at `cfg`'s input on `dataset`, per stage as `time_solo`.

    `quick` keeps 100 proposals and 10 detections instead of 1,000 and 100.
    """
    torch.manual_seed(cfg.seed)
    options = {"rpn_post_nms_top_n_test": 100, "box_detections_per_img": 10} if quick else {}
    model = build_maskrcnn_r50(cfg, **options).eval()
    clock, instances = StageClock(), []

    def one_image(i: int) -> int:
        with clock.stage("end to end"):
            with clock.stage("pre-processing"):
                image, meta = dataset[i]
            with clock.stage("network"):
                out = model([image])[0]
            with clock.stage("masks to original"):
                masks = masks_to_original(out["masks"][:, 0], meta["geometry"], cfg)
            prediction = {"masks": masks, "labels": out["labels"], "scores": out["scores"]}
            with clock.stage("RLE"):
                to_coco_results(prediction, i, None, meta["file_name"])
        return len(out["scores"])

    with torch.no_grad():
        for i in range(warmup):
            one_image(i % len(dataset))
        clock.timing = True
        for _ in range(passes):
            instances += [one_image(i) for i in range(len(dataset))]
    return {"clock": clock, "candidates": None, "instances": np.mean(instances)}


def load_model(args: argparse.Namespace) -> tuple[SOLO, str]:
    """The network to time and where it comes from: the trained checkpoint or, with
    ``--quick``, the untrained cpu preset shrunk, with thresholds lowered so that every
    stage has candidates to work on."""
    if args.quick:
        cfg = quick_config(SOLOConfig.cpu()).replace(
            score_threshold=0.0, mask_threshold=0.005, update_threshold=0.0
        )
        torch.manual_seed(cfg.seed)
        return SOLO(cfg).eval(), "untrained cpu preset, shrunk (--quick)"
    path = Path(args.ckpt) if args.ckpt else best_checkpoint(common.REPO_ROOT / "runs" / "cpu")
    lit = LitSOLO.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    path = path.resolve()
    shown = path.relative_to(common.REPO_ROOT) if path.is_relative_to(common.REPO_ROOT) else path
    return lit.model.eval(), f"trained checkpoint {shown}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="checkpoint (default: best val/AP under runs/cpu)")
    parser.add_argument("--images", type=int, default=50, help="validation images (default: 50)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes (default: 3)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed images first (default: 5)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-maskrcnn", action="store_true", help="skip Mask R-CNN")
    common.add_common_arguments(
        parser,
        quick_help="smoke test: untrained cpu preset shrunk (96x128), 2 images, 1 pass, "
        "no torch.compile (its compilation takes minutes)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    images, passes, warmup = args.images, args.passes, args.warmup
    if args.quick:
        images, passes, warmup = 2, 1, 1
    model, source = load_model(args)
    cfg = model.cfg
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = tiny_dataset(tmp, 8) if args.quick else None
        dataset = ImageFolderDataset(
            validation_folder(cfg, root, images, Path(tmp) / "images"), cfg
        )
        runtime = OnnxSOLO(export_onnx(model, Path(tmp) / "solo.onnx"), threads=args.threads)
        # (name, network, whether a failure is reported rather than raised)
        contenders: list[tuple[str, Callable[[], NetworkStages], bool]] = [
            ("SOLO, PyTorch eager", lambda: torch_stages(model, compiled=False), False)
        ]
        if not (args.no_compile or args.quick):  # compiling takes minutes: not in a smoke test
            compiled = ("SOLO, torch.compile", lambda: torch_stages(model, compiled=True), True)
            contenders.append(compiled)
        contenders.append(("SOLO, onnxruntime", lambda: [("network", runtime.outputs)], False))
        results = []
        for name, build, may_fail in contenders:
            network = build()
            try:
                with torch.no_grad():
                    check_stages(network, dataset, cfg)  # the first call compiles
            except Exception as err:  # torch.compile may fail on a machine (no compiler...)
                if not may_fail:
                    raise
                failures.append(f"{name} failed: {type(err).__name__}: {str(err)[:300]}")
                continue
            results.append((name, time_solo(network, dataset, cfg, passes, warmup)))
        if not args.no_maskrcnn:
            mask_rcnn = time_maskrcnn(dataset, cfg, passes, warmup, args.quick)
            results.append(("Mask R-CNN R50-FPN, untrained (torchvision)", mask_rcnn))
        for name, r in results:
            clock = r["clock"]
            network_ms = clock.mean("network")
            if network_ms is None:  # the two torch stages: their sum
                network_ms = clock.mean("backbone + FPN") + clock.mean("heads")
            means = [clock.mean(stage) for stage in STAGES]
            means[STAGES.index("network")] = network_ms
            candidates = "-" if r["candidates"] is None else f"{r['candidates']:.0f}"
            rows.append(
                [name, *map(fmt, means), fmt(clock.mean("end to end")), candidates]
                + [f"{r['instances']:.1f}"]
            )
    size = f"{cfg.image_size[0]}x{cfg.image_size[1]}"
    header = ["runtime", *(f"{s} ms" for s in STAGES), "end to end ms", "to Matrix NMS", "out"]
    command = shlex.join(sys.argv[1:] if argv is None else list(argv))
    notes = (
        f"Model: {source} (config {cfg.name!r}, input {size}); {len(dataset)} validation "
        f"images of {'a generated 8-image set' if args.quick else 'the built-in set'} as PNG "
        f"files, batch 1, {passes} timed passes after {warmup} "
        f"warm-up images, {args.threads} threads (torch and onnxruntime), fp32, no_grad. "
        "Mean ms per image. Network: backbone + FPN + heads; onnxruntime runs them as one "
        "graph, Mask R-CNN's forward includes its RPN and RoI NMS and its mask pasting. "
        "To Matrix NMS: mean candidates per image that reach Matrix NMS (after points NMS, "
        "the score threshold, maskness and the top-nms_pre cut); out: mean instances per "
        "image. Mask R-CNN is untrained (weights=None): it keeps its maximum of detections "
        f"({10 if args.quick else 100}), so its mask head and pasting work at full load; "
        "its accuracy is not measured here."
        + (
            " --quick: torch.compile not run; score threshold 0, mask threshold 0.005 and "
            "update threshold 0, so that the untrained network gives every stage work."
            if args.quick
            else ""
        )
        + "".join(f"\n\n{failure}" for failure in failures)
        + f"\n\nCommand: `python benchmarks/bench_deploy.py {command}`."
    )
    common.report(
        SECTION,
        "Deployment: stages of an inference, eager, compiled, onnxruntime (cpu)",
        header,
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
