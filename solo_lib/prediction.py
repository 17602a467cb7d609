"""Predictions as files: COCO-format results with RLE masks, and overlay PNGs.

`python -m solo_lib predict` runs `LitSOLO.predict_step` over a folder of images
(``--data.predict_dir``) or the validation split, and `PredictionWriter` writes:

- ``results.json``: the COCO results format, one entry per instance with
  ``image_id`` (a COCO set's own ids), ``category_id``, ``segmentation`` (RLE),
  ``score`` and, for images from files, ``file_name``;
- ``overlays/<file name>.png``: each image with its class-coloured masks.

Results are also appended, batch by batch, to ``results.rank<r>.partial.jsonl`` (one
JSON entry per line, flushed to disk), so a run that dies half-way loses at most its
current batch; the file is removed once ``results.json`` is written. Files that cannot
be read are skipped with a warning and counted in the closing line.

Under DDP each process predicts its share of the images; the writer gathers the
results on rank 0, which writes the one ``results.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import pytorch_lightning as pl
import torch.distributed as dist
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor

from solo_lib.atomic import atomic_file
from solo_lib.viz import display_image, draw_instances


def to_coco_results(
    prediction: dict[str, Tensor],
    image_id: int,
    category_ids: list[int] | None = None,
    file_name: str | None = None,
) -> list[dict[str, Any]]:
    """One image's prediction as COCO result entries (RLE masks, counts as str).

    `category_ids[label - 1]` maps labels 1..C to the data set's category ids;
    by default the label is the id. `file_name`, where the image has one, goes into
    every entry, so that a result can be traced to its file without the data set.
    Masks are encoded one at a time: a copy of all of
    them in pycocotools' layout would double the memory of a large photo's masks.
    """
    masks = prediction["masks"].detach().cpu()  # (n, H0, W0) bool
    results = []
    for mask, label, score in zip(
        masks, prediction["labels"].tolist(), prediction["scores"].tolist(), strict=True
    ):
        rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        category = category_ids[label - 1] if category_ids else label
        entry = {"image_id": image_id, "category_id": category, "segmentation": rle, "score": score}
        results.append(entry | ({"file_name": file_name} if file_name is not None else {}))
    return results


def overlay_name(file_name: str | None, image_id: int) -> str:
    """The overlay's file name: the image's whole file name plus ``.png``.

    Whole, so that ``a.jpg`` and ``a.png`` get two overlays; folders in a COCO
    ``file_name`` become ``__``. Images without a file (CIS 680) are named by id.
    """
    if file_name is None:
        return f"{image_id:06d}.png"
    return file_name.replace("/", "__").replace("\\", "__") + ".png"


class PredictionWriter(BasePredictionWriter):
    """Write ``results.json`` (COCO results) and overlay PNGs into `output_dir`.

    Expects `predict_step` to return ``(images, targets, predictions)`` for each batch.
    Category ids: `category_ids` if given, else the model's (``cfg.category_ids``, kept
    in checkpoints of models trained on COCO files), else the labels.
    ``results.json`` lists the instances by image id. Under DDP, rank 0 writes it from
    every rank's results; an image that the distributed sampler gave to two ranks (it
    pads the last batches by repeating images) is counted once.
    """

    def __init__(
        self,
        output_dir: str = "runs/predictions",
        category_ids: list[int] | None = None,
        overlays: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.category_ids = category_ids
        self.overlays = overlays
        self.results_by_image: dict[int, list[dict[str, Any]]] = {}

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results_by_image = {}
        self.skipped = 0
        (self.output_dir / "overlays").mkdir(parents=True, exist_ok=True)
        self.partial_file = self.output_dir / f"results.rank{trainer.global_rank}.partial.jsonl"
        self.partial_file.unlink(missing_ok=True)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        images, targets, predictions = prediction
        if batch_indices is not None:  # items of the batch that `collate` left out
            self.skipped += len(batch_indices) - len(targets)
        batch_results = []
        for image, target, pred in zip(images, targets, predictions, strict=True):
            # A COCO set's own image id; elsewhere the position in the data set.
            image_id = int(target.get("coco_id", target["image_id"]))
            file_name = target.get("file_name")
            category_ids = self.category_ids or pl_module.cfg.category_ids
            self.results_by_image[image_id] = to_coco_results(
                pred, image_id, category_ids, file_name
            )
            batch_results += self.results_by_image[image_id]
            if self.overlays:
                self._write_overlay(image, target, pred, pl_module.cfg, image_id)
        with open(self.partial_file, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in batch_results))
            f.flush()
            os.fsync(f.fileno())

    def _write_overlay(self, image, target, pred, cfg, image_id: int) -> None:
        picture = display_image(image.cpu(), target, cfg)
        h0, w0 = picture.shape[:2]
        fig = Figure(figsize=(w0 / 100, h0 / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        masks, labels, scores = pred["masks"].cpu(), pred["labels"].cpu(), pred["scores"].cpu()
        draw_instances(ax, picture, masks, labels, scores=scores, class_names=cfg.class_names)
        name = overlay_name(target.get("file_name"), image_id)
        with atomic_file(self.output_dir / "overlays" / name) as tmp:
            fig.savefig(tmp, dpi=100, format="png")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        by_image, skipped = self.results_by_image, self.skipped
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[tuple[dict[int, list[dict[str, Any]]], int] | None]
            gathered = [None] * trainer.world_size
            dist.all_gather_object(gathered, (by_image, skipped))
            by_image, skipped = {}, 0
            for part, part_skipped in filter(None, gathered):
                skipped += part_skipped
                for image_id, results in part.items():
                    by_image.setdefault(image_id, results)
        if trainer.is_global_zero:
            results = [r for image_id in sorted(by_image) for r in by_image[image_id]]
            with atomic_file(self.output_dir / "results.json") as tmp:
                tmp.write_text(json.dumps(results))
            unreadable = (
                f"; skipped {skipped} unreadable files (see the warnings)" if skipped else ""
            )
            print(
                f"wrote {len(results)} instances of {len(by_image)} images to "
                f"{self.output_dir / 'results.json'} "
                f"and overlays to {self.output_dir / 'overlays'}{unreadable}",
                flush=True,
            )
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.barrier()  # results.json is written before any partial file goes
        self.partial_file.unlink(missing_ok=True)
