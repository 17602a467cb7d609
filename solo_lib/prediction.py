"""Predictions as files: COCO-format results with RLE masks, and overlay PNGs.

`python -m solo_lib predict` runs `LitSOLO.predict_step` over a folder of images
(``--data.predict_dir``) or the validation split, and `PredictionWriter` writes (with
``--onnx``, `write_predictions` runs an `OnnxSOLO` over the same images instead, in a
plain loop without Lightning's trainer; both write through `ResultsWriter`, so the
files are the same):

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
from collections.abc import Callable, Iterable
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
from solo_lib.config import SOLOConfig
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


class ResultsWriter:
    """Write ``results.json`` (COCO results), overlay PNGs and the partial file into `output_dir`.

    The one place where predictions become files, without Lightning: `PredictionWriter`
    drives it from a Lightning ``predict`` run, `write_predictions` from a plain loop
    (``predict --onnx``). Category ids: `category_ids` if given, else the model's
    (``cfg.category_ids``, kept in checkpoints of models trained on COCO files), else
    the labels.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike = "runs/predictions",
        category_ids: list[int] | None = None,
        overlays: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.category_ids = category_ids
        self.overlays = overlays
        self.results_by_image: dict[int, list[dict[str, Any]]] = {}
        self.partial_file = self.output_dir / "results.rank0.partial.jsonl"

    def start(self, rank: int = 0) -> None:
        """Forget earlier results, create the overlay folder (if drawing overlays) and this
        rank's partial file."""
        self.results_by_image = {}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.overlays:
            (self.output_dir / "overlays").mkdir(exist_ok=True)
        self.partial_file = self.output_dir / f"results.rank{rank}.partial.jsonl"
        self.partial_file.unlink(missing_ok=True)

    def write_batch(
        self, images: Tensor, targets: list[dict], predictions: list[dict], cfg: SOLOConfig
    ) -> None:
        """Keep a batch's results, draw its overlays and append it to the partial file.

        `images` (B, 3, H, W) are the network's inputs; `targets` the data set's metadata
        of each image; `predictions` what `postprocess` returns for them.
        """
        category_ids = self.category_ids or cfg.category_ids
        batch_results = []
        for image, target, pred in zip(images, targets, predictions, strict=True):
            # A COCO set's own image id; elsewhere the position in the data set.
            image_id = int(target.get("coco_id", target["image_id"]))
            file_name = target.get("file_name")
            self.results_by_image[image_id] = to_coco_results(
                pred, image_id, category_ids, file_name
            )
            batch_results += self.results_by_image[image_id]
            if self.overlays:
                self._write_overlay(image, target, pred, cfg, image_id)
        with open(self.partial_file, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in batch_results))
            f.flush()
            os.fsync(f.fileno())

    def _write_overlay(self, image, target, pred, cfg: SOLOConfig, image_id: int) -> None:
        picture = display_image(image.cpu(), target, cfg)
        h0, w0 = picture.shape[:2]
        fig = Figure(figsize=(w0 / 100, h0 / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        masks, labels, scores = pred["masks"].cpu(), pred["labels"].cpu(), pred["scores"].cpu()
        draw_instances(ax, picture, masks, labels, scores=scores, class_names=cfg.class_names)
        name = overlay_name(target.get("file_name"), image_id)
        with atomic_file(self.output_dir / "overlays" / name) as tmp:
            fig.savefig(tmp, dpi=100, format="png")

    def write_results(self, by_image: dict[int, list[dict[str, Any]]], skipped: int) -> None:
        """Write ``results.json`` from `by_image` (results per image id, in id order) and
        print what was written; `skipped` unreadable files are counted in that line."""
        results = [r for image_id in sorted(by_image) for r in by_image[image_id]]
        with atomic_file(self.output_dir / "results.json") as tmp:
            tmp.write_text(json.dumps(results))
        unreadable = f"; skipped {skipped} unreadable files (see the warnings)" if skipped else ""
        overlays = f" and overlays to {self.output_dir / 'overlays'}" if self.overlays else ""
        print(
            f"wrote {len(results)} instances of {len(by_image)} images to "
            f"{self.output_dir / 'results.json'}{overlays}{unreadable}",
            flush=True,
        )

    def remove_partial(self) -> None:
        """Remove this rank's partial file: call it once ``results.json`` is written."""
        self.partial_file.unlink(missing_ok=True)


def write_predictions(
    predict: Callable[[Tensor, list[dict]], list[dict]],
    loader: Iterable[tuple[Tensor, list[dict]]],
    writer: ResultsWriter,
    cfg: SOLOConfig,
    num_images: int,
) -> None:
    """Predict every batch of `loader` and write the results with `writer`: ``predict``
    without Lightning (one process).

    `predict(images, metas)` returns instances per image (`SOLO.predict`,
    `OnnxSOLO.predict`); `num_images` is the data set's length, so that the files that
    `collate` left out (unreadable) are counted.
    """
    writer.start()
    predicted = 0
    for images, targets in loader:
        if targets:  # empty when every file of the batch was unreadable
            writer.write_batch(images, targets, predict(images, targets), cfg)
            predicted += len(targets)
    writer.write_results(writer.results_by_image, num_images - predicted)
    writer.remove_partial()


class PredictionWriter(BasePredictionWriter):
    """`ResultsWriter` as a Lightning callback: ``results.json`` and overlays of ``predict``.

    Expects `predict_step` to return ``(images, targets, predictions)`` for each batch;
    the category ids are the model's unless `category_ids` is given.
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
        self.writer = ResultsWriter(output_dir, category_ids, overlays)
        self.skipped = 0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.writer.start(trainer.global_rank)
        self.skipped = 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        images, targets, predictions = prediction
        if batch_indices is not None:  # items of the batch that `collate` left out
            self.skipped += len(batch_indices) - len(targets)
        self.writer.write_batch(images, targets, predictions, pl_module.cfg)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        by_image, skipped = self.writer.results_by_image, self.skipped
        distributed = trainer.world_size > 1 and dist.is_available() and dist.is_initialized()
        if distributed:
            gathered: list[tuple[dict[int, list[dict[str, Any]]], int] | None]
            gathered = [None] * trainer.world_size
            dist.all_gather_object(gathered, (by_image, skipped))
            by_image, skipped = {}, 0
            for part, part_skipped in filter(None, gathered):
                skipped += part_skipped
                for image_id, results in part.items():
                    by_image.setdefault(image_id, results)
        if trainer.is_global_zero:
            self.writer.write_results(by_image, skipped)
        if distributed:
            dist.barrier()  # results.json is written before any partial file goes
        self.writer.remove_partial()
