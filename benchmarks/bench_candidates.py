"""Candidate-first inference against the dense path it replaced (issue 29), in one run.

Before: every cell's mask is made on every level (``SOLO.forward``, the network's S^2
mask channels), then post-processing keeps a few dozen. After: the category grids
choose the candidates, and only their masks are made (``SOLO.mask_makers`` and
`postprocess_parts`). The dense path is still the library's (the tests hold the two
to each other), so both run here in one process, on the same machine, one after the
other; each row is a ratio measured in the same run. Measured:

* validation of the main job's 200 validation images (``trainer.validate``, wall time,
  at the precision `fit` uses on this machine): before, the losses from every cell's
  mask and post-processing on them, as ``LitSOLO`` did; after, the losses from the
  active cells' masks and post-processing that makes the candidates' masks;
* inference end to end per image, from the PNG file to the RLE (`bench_deploy`'s staged
  pipeline, batch 1, PyTorch eager), for the trained models of the course's jobs (the
  main job's reference weights, ``runs/dense`` and ``runs/solov2_cpu`` when trained)
  and for the two paper presets, untrained (no trained paper model exists on a CPU);
  the instances of both paths are checked equal first;
* the peak memory of one paper-preset image's inference, in a fresh process: the
  resident size's peak over the inference, above the size before it;
* the ONNX file of the main job's model and its outputs per image: before, every
  cell's mask probabilities; after, category probabilities and the mask makers'
  tensors (`solo_lib.export`).

    python benchmarks/bench_candidates.py           # about 10 minutes on 2 cores
    python benchmarks/bench_candidates.py --quick   # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
import pytorch_lightning as pl
import torch
import yaml
from bench_data import peak_resident_bytes, reset_peak_resident, resident_bytes
from bench_deploy import best_checkpoint, check_stages, time_solo, torch_stages, validation_folder
from bench_train import quick_config, tiny_dataset

from solo_lib import course, reference
from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.data.folder import ImageFolderDataset
from solo_lib.export import export_onnx
from solo_lib.hardware import fastest_precision
from solo_lib.model import SOLO
from solo_lib.module import LitSOLO
from solo_lib.postprocess import postprocess

SECTION = "bench_candidates"


# --- the dense path, as the library ran it before candidate-first inference ---------------
def dense_stages(model: SOLO) -> list[tuple[str, object]]:
    """`bench_deploy`'s network stages with every cell's mask made in the heads stage:
    per level category (1, C, S, S) and mask (1, S^2, h, w) probabilities."""
    backbone, heads = torch_stages(model, compiled=False)

    def every_mask(features: list[torch.Tensor]) -> tuple[list, list]:
        category, masks = model.head(features)  # every cell's mask logits
        return [c.float().sigmoid() for c in category], [m.float().sigmoid() for m in masks]

    return [backbone, ("heads", every_mask)]


class DenseValidation(LitSOLO):
    """`LitSOLO` whose validation makes every cell's mask, for the losses and for
    post-processing: what validation did before candidate-first inference."""

    def _evaluation_step(self, batch, batch_idx: int, stage: str) -> None:
        from solo_lib.losses import solo_loss
        from solo_lib.targets import build_batch_targets

        images, targets = batch
        output = self.model(images)  # every cell's mask on every level
        output = type(output)(
            [c.float() for c in output.category], [m.float() for m in output.masks]
        )
        losses = solo_loss(output, build_batch_targets(targets, self.cfg), self.cfg)
        self.log_dict({f"{stage}/{k}": v for k, v in losses.items()}, batch_size=len(targets))
        if self._map_this_epoch():
            predictions = postprocess(*output.probabilities(), targets, self.cfg)
            self.evaluator.update(
                predictions,
                [t["original"] for t in targets],
                image_ids=[int(t["image_id"]) for t in targets],
            )


# --- measurements --------------------------------------------------------------------------
def validation_seconds(checkpoint: Path, module: type[LitSOLO], quick: bool) -> tuple[float, dict]:
    """Wall seconds of ``trainer.validate`` of `checkpoint` with `module`'s validation,
    on its run's validation split, and the mask AP it logged."""
    run = checkpoint.parents[1]
    model = module.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    data_options = yaml.safe_load((run / "config.yaml").read_text())["data"]
    data = SOLODataModule(model.cfg, **data_options)
    data.setup("validate")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=fastest_precision("cpu"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=2 if quick else 1.0,
    )
    start = time.perf_counter()
    [metrics] = trainer.validate(model, data, verbose=False)
    return time.perf_counter() - start, {k: float(metrics[f"val/{k}"]) for k in ("AP", "AP50")}


def trained_models(quick: bool) -> list[tuple[str, SOLO, str, str]]:
    """(job, model, where it comes from, its built-in set) for the main job, dense and
    SOLOv2 jobs, and the two paper presets (untrained); with `quick`, the cpu preset
    shrunk, untrained."""
    if quick:
        cfg = quick_config(SOLOConfig.cpu()).replace(
            score_threshold=0.0, mask_threshold=0.005, update_threshold=0.0
        )
        torch.manual_seed(cfg.seed)
        return [("cpu, shrunk", SOLO(cfg).eval(), "untrained (--quick)", "objects")]
    models = []
    checkpoints = {
        "cpu": reference.weights_of(course.reference_run(course.MAIN_JOB)),
        "dense": None,
        "solov2_cpu": None,
    }
    for job in ("dense", "solov2_cpu"):
        try:
            checkpoints[job] = best_checkpoint(common.REPO_ROOT / "runs" / job)
        except FileNotFoundError:
            pass
    for job, path in checkpoints.items():
        builtin = "dense" if job == "dense" else "objects"
        if path is None:
            torch.manual_seed(0)
            model = SOLO(SOLOConfig.preset(job)).eval()
            models.append((job, model, "untrained: no run", builtin))
            continue
        builtin = yaml.safe_load((path.parents[1] / "config.yaml").read_text())["data"]["builtin"]
        lit = LitSOLO.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        source = str(path.relative_to(common.REPO_ROOT))
        models.append((job, lit.model.eval(), source, builtin))
    for preset in ("paper", "solov2_paper"):
        torch.manual_seed(0)
        cfg = SOLOConfig.preset(preset).replace(pretrained=None)
        models.append((preset, SOLO(cfg).eval(), "untrained", "objects"))
    return models


def inference_ms(
    model: SOLO,
    folder: Path,
    images: int,
    passes: int,
    warmup: int,
    root: Path | None = None,
    builtin: str = "objects",
) -> dict:
    """End-to-end ms per image (and per stage) of both paths on `images` PNG files of the
    model's validation split (of the data set in `root`, None: the built-in set
    `builtin`); the instances of the two paths are checked equal first."""
    cfg = model.cfg
    dataset = ImageFolderDataset(validation_folder(cfg, root, images, folder, builtin), cfg)
    out = {}
    with torch.no_grad():
        for name, stages in (
            ("dense", dense_stages(model)),
            ("candidates", torch_stages(model, False)),
        ):
            check_stages(stages, dataset, cfg)  # the staged pipeline is postprocess's
            out[name] = time_solo(stages, dataset, cfg, passes, warmup)
        for i in range(len(dataset)):
            image, meta = dataset[i]
            dense = postprocess(*_run(dense_stages(model), image[None]), [meta], cfg)[0]
            first = postprocess(*_run(torch_stages(model, False), image[None]), [meta], cfg)[0]
            same = torch.equal(dense["labels"], first["labels"])
            same = same and torch.equal(dense["masks"], first["masks"])
            if not same or not torch.allclose(dense["scores"], first["scores"], atol=1e-5):
                raise AssertionError(f"{cfg.name}: image {i}: the two paths differ")
    return out


def _run(stages, value):
    for _, run in stages:
        value = run(value)
    return value


def memory_child(spec: dict) -> dict:
    """Peak resident bytes of one image's inference above the size before it (child):
    the dense path, the candidate-first one, or the backbone and FPN alone."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    cfg = SOLOConfig.preset(spec["preset"]).replace(pretrained=None)
    if spec["quick"]:
        cfg = quick_config(cfg)
    model = SOLO(cfg).eval()
    image = torch.randn(1, 3, *cfg.image_size)
    height, width = cfg.image_size
    from solo_lib.data.geometry import ImageGeometry

    meta = {"geometry": ImageGeometry((height, width), cfg.image_size, cfg.image_size)}
    stages = dense_stages(model) if spec["path"] == "dense" else torch_stages(model, False)
    reset_peak_resident()
    before = resident_bytes()
    with torch.no_grad():
        if spec["path"] == "backbone":
            model.backbone(image)
        else:
            postprocess(*_run(stages, image), [meta], cfg)
    return {"before": before, "peak": peak_resident_bytes()}


def memory_mb(preset: str, path: str, threads: int, quick: bool) -> float:
    """`memory_child` in a fresh process: MB above the process's size before the image."""
    spec = {"preset": preset, "path": path, "threads": threads, "quick": quick}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory of {preset} ({path}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return (result["peak"] - result["before"]) / 2**20


class DenseProbabilities(torch.nn.Module):
    """SOLO up to every cell's mask probabilities: the ONNX graph before issue 29."""

    def __init__(self, model: SOLO) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        category, masks = self.model(images).probabilities()
        return (*category, *masks)


def onnx_sizes(model: SOLO, folder: Path) -> dict[str, tuple[float, float]]:
    """(file MB, outputs MB per image) of the dense graph and of the library's export."""
    import onnxruntime as ort

    example = torch.zeros(1, 3, *model.cfg.image_size)
    dense_path = folder / "dense.onnx"
    with torch.no_grad():
        torch.onnx.export(
            DenseProbabilities(model).eval(), (example,), dynamo=True, input_names=["images"]
        ).save(dense_path)
    ours = export_onnx(model, folder / "candidates.onnx")
    sizes = {}
    for name, path in (("dense", dense_path), ("candidates", ours)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {"images": example.numpy()})
        sizes[name] = (path.stat().st_size / 2**20, sum(o.nbytes for o in outputs) / 2**20)
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20, help="PNG images (default: 20)")
    parser.add_argument("--passes", type=int, default=2, help="timed passes (default: 2)")
    parser.add_argument("--paper-images", type=int, default=3, help="paper presets' images")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    common.add_common_arguments(parser, quick_help="smoke test: shrunk untrained models")
    return parser.parse_args(argv)


def ratio(before: float, after: float) -> str:
    return f"{before / after:.1f}x" if after > 0 else "-"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(memory_child(json.loads(args.child))))
        return
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.quick:
            checkpoint = None
        else:
            checkpoint = reference.weights_of(course.reference_run(course.MAIN_JOB))
            timings = {}
            for name, module in (("dense", DenseValidation), ("candidates", LitSOLO)):
                timings[name] = validation_seconds(checkpoint, module, args.quick)
            (before, ap_before), (after, ap_after) = timings["dense"], timings["candidates"]
            print(f"validation: {timings}", file=sys.stderr, flush=True)
            rows.append(
                [
                    "validation, main job's 200 images, s",
                    f"{before:.1f}",
                    f"{after:.1f}",
                    ratio(before, after),
                    f"AP50 {ap_before['AP50']:.3f} both"
                    if ap_before == ap_after
                    else f"AP50 {ap_before['AP50']:.3f} / {ap_after['AP50']:.3f}",
                ]
            )
        root = tiny_dataset(tmp, 8) if args.quick else None
        for job, model, source, builtin in trained_models(args.quick):
            paper = job.startswith(("paper", "solov2_paper"))
            images = 2 if args.quick else (args.paper_images if paper else args.images)
            passes = 1 if args.quick or paper else args.passes
            folder = tmp / f"{job}-images"
            warmup = 1 if paper or args.quick else 3
            timed = inference_ms(model, folder, images, passes, warmup, root, builtin)
            before = timed["dense"]["clock"].mean("end to end")
            after = timed["candidates"]["clock"].mean("end to end")
            reaching = timed["candidates"]["candidates"]
            rows.append(
                [
                    f"inference end to end, {job} ({source}), ms / image",
                    f"{before:.0f}",
                    f"{after:.0f}",
                    ratio(before, after),
                    f"{reaching:.0f} candidates reach Matrix NMS; same instances",
                ]
            )
        for preset in ("paper", "solov2_paper"):
            before = memory_mb(preset, "dense", args.threads, args.quick)
            after = memory_mb(preset, "candidates", args.threads, args.quick)
            backbone = memory_mb(preset, "backbone", args.threads, args.quick)
            rows.append(
                [
                    f"peak memory of one {preset} image (untrained), MB",
                    f"{before:.0f}",
                    f"{after:.0f}",
                    ratio(before, after),
                    f"above the process's size before it; the backbone and FPN alone: "
                    f"{backbone:.0f}",
                ]
            )
        if not args.quick:
            lit = LitSOLO.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
            sizes = onnx_sizes(lit.model.eval(), tmp)
            for index, what in enumerate(("ONNX file", "ONNX outputs per image")):
                before, after = sizes["dense"][index], sizes["candidates"][index]
                rows.append(
                    [
                        f"{what}, main job, MB",
                        f"{before:.2f}",
                        f"{after:.2f}",
                        ratio(before, after),
                        "",
                    ]
                )
    header = ["measure", "before: every mask", "after: candidates' masks", "ratio", "note"]
    command = shlex.join(sys.argv[1:] if argv is None else list(argv))
    notes = (
        f"{args.threads} threads; validation at {fastest_precision('cpu')} (what fit uses on "
        "this machine), inference in float32 under no_grad at batch 1 from the PNG file to "
        f"the RLE: mean over {args.images} validation images x {args.passes} passes (paper "
        f"presets: {args.paper_images} images, 1 pass). Before and after run in this one "
        "process, one after the other. The paper presets are untrained: their category "
        "prior keeps almost every cell below the score threshold, so after the change their "
        "post-processing makes almost no mask.\n\n"
        f"Command: `python benchmarks/bench_candidates.py {command}`."
    )
    common.report(
        SECTION,
        "Candidate-first inference: before and after (issue 29)",
        header,
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
