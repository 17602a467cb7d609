"""COCO-format instance segmentation: a data set reader and a writer.

`CocoInstanceDataset` reads an `instances_*.json`-style annotation file with
pycocotools (polygons, uncompressed and compressed RLE) and yields the same items
as `CIS680Dataset`, so a custom data set trains without code changes. Category ids
are mapped to labels 1..C in sorted id order. Crowd annotations (`iscrowd` = 1)
are read with their flag: training skips them (SOLO has no use for a mask of many
objects), evaluation ignores detections on them, as pycocotools does.

`write_coco_dataset` exports any data set with `load_raw(i)` and `class_names`
(e.g. the built-in one) to a COCO folder, which is how the tests and notebook 01
make a small COCO set without downloading one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from solo_lib.atomic import atomic_directory
from solo_lib.config import SOLOConfig
from solo_lib.data.errors import DataFormatError
from solo_lib.data.images import read_rgb
from solo_lib.data.transforms import PairTransform, build_transforms

ANNOTATION_FILE = "annotations.json"
IMAGE_DIR = "images"


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(n, H, W) binary masks -> float32 (n, 4) x1 y1 x2 y2 with pixel-edge corners.

    A mask spanning columns a..b gives x1 = a, x2 = b + 1; an empty mask gives zeros.
    """
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for j, m in enumerate(masks):
        cols, rows = np.flatnonzero(m.any(axis=0)), np.flatnonzero(m.any(axis=1))
        if cols.size:
            boxes[j] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def load_coco(annotation_file: Path) -> COCO:
    """A pycocotools `COCO` index of `annotation_file`, after checking its top-level form.

    pycocotools itself answers a JSON list with a bare ``AssertionError`` and a file
    without ``images`` with a ``KeyError`` much later; here both name the file and the
    expected form.
    """
    try:
        dataset = json.loads(annotation_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{annotation_file}: not a readable JSON file ({err})") from None
    expected = "a JSON object with the lists 'images', 'annotations' and 'categories'"
    if not isinstance(dataset, dict):
        raise DataFormatError(
            f"{annotation_file}: holds a JSON {type(dataset).__name__}; expected {expected}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataFormatError(f"{annotation_file}: no list {key!r}; expected {expected}")
    for info in dataset["images"]:
        if not isinstance(info, dict) or not {"id", "height", "width"} <= info.keys():
            raise DataFormatError(
                f"{annotation_file}: image entry {str(info)[:80]} lacks 'id', 'height' or "
                "'width'; every image needs all three (masks are decoded at that size)"
            )
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def check_segmentation(ann: dict, images: dict[int, dict], annotation_file: Path) -> None:
    """Refuse an annotation whose segmentation pycocotools would fail on, or decode to nothing.

    Accepted forms: polygons (a non-empty list of lists of at least 6 finite numbers,
    x y pairs), uncompressed RLE (``counts`` a list) and compressed RLE (``counts`` a
    string), both with ``size`` equal to the image's [height, width].
    """
    where = f"{annotation_file}: annotation id {ann.get('id')}"
    info = images.get(ann.get("image_id"))
    if info is None:
        raise DataFormatError(
            f"{where} has image_id {ann.get('image_id')!r}, which is not in 'images'"
        )
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        polygons_ok = bool(segm) and all(
            isinstance(poly, list)
            and len(poly) >= 6
            and len(poly) % 2 == 0
            and all(isinstance(v, int | float) and np.isfinite(v) for v in poly)
            for poly in segm
        )
        if not polygons_ok:
            raise DataFormatError(
                f"{where}: segmentation {str(segm)[:60]} is not a list of polygons; expected "
                "[[x1, y1, x2, y2, x3, y3, ...], ...] with at least 3 points each"
            )
        return
    size = [info["height"], info["width"]]
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise DataFormatError(
            f"{where}: segmentation {str(segm)[:60]} is neither polygons nor RLE; expected "
            "a list of polygons or {'size': [height, width], 'counts': ...}"
        )
    if list(segm["size"]) != size:
        raise DataFormatError(
            f"{where}: RLE size {segm['size']}; expected {size}, the size of image id {info['id']}"
        )


class CocoInstanceDataset(Dataset):
    """COCO instance annotations as `(image, target)` items, the same as `CIS680Dataset`'s.

    Args:
        image_dir: folder the `file_name` entries of the annotation file are relative to.
        annotation_file: a COCO instances json.
        cfg: input size, normalisation, augmentation; `cfg.num_classes` must equal the
            number of categories in the file.
        train: training-time augmentation.
        indices: optional subset (positions in the image list sorted by image id).
        transforms: replaces `build_transforms(cfg, train)`.

    Boxes are recomputed from the decoded masks, so they always agree with them.
    `image_id` in a target is the position in the full image list, not the COCO id;
    `coco_ids[image_id]` gives the COCO id.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotation_file: str | os.PathLike,
        cfg: SOLOConfig,
        train: bool = False,
        indices: Sequence[int] | None = None,
        transforms: PairTransform | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.cfg = cfg
        self.transforms = transforms if transforms is not None else build_transforms(cfg, train)
        if not self.annotation_file.is_file():
            raise DataFormatError(
                f"{self.annotation_file}: annotation file not found (expected a COCO json)"
            )
        self.coco = load_coco(self.annotation_file)
        cat_ids = sorted(self.coco.getCatIds())
        if len(cat_ids) != cfg.num_classes:
            raise DataFormatError(
                f"{self.annotation_file}: 'categories' has {len(cat_ids)} entries {cat_ids}; expected "
                f"cfg.num_classes = {cfg.num_classes} (set num_classes and class_names in the config)"
            )
        if cfg.category_ids is not None and tuple(cfg.category_ids) != tuple(cat_ids):
            raise DataFormatError(
                f"{self.annotation_file}: category ids {cat_ids}; the model's are "
                f"{list(cfg.category_ids)} (category_ids in the config or checkpoint)"
            )
        #: The COCO category ids of labels 1..C: the file's ids, sorted.
        self.category_ids = tuple(cat_ids)
        #: COCO category id -> label 1..C, in sorted id order
        self.cat_to_label = {cid: k for k, cid in enumerate(cat_ids, start=1)}
        self.class_names = tuple(self.coco.cats[cid]["name"] for cid in cat_ids)
        self.coco_ids = sorted(self.coco.getImgIds())
        for img_id in self.coco_ids:
            info = self.coco.imgs[img_id]
            if "file_name" not in info:
                raise DataFormatError(
                    f"{self.annotation_file}: image id {img_id} has no 'file_name'"
                )
            path = self.image_dir / info["file_name"]
            if not path.is_file():
                raise DataFormatError(
                    f"{path}: image file not found (image id {img_id} in {self.annotation_file})"
                )
        for ann in self.coco.dataset["annotations"]:
            if ann.get("category_id") not in self.cat_to_label:
                raise DataFormatError(
                    f"{self.annotation_file}: annotation id {ann.get('id')} has category_id "
                    f"{ann.get('category_id')!r}; expected one of {cat_ids}"
                )
            check_segmentation(ann, self.coco.imgs, self.annotation_file)
        n = len(self.coco_ids)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(
                f"indices must lie in [0, {n}); got {self.indices.min()}..{self.indices.max()}"
            )

    def __len__(self) -> int:
        return len(self.indices)

    def load_raw(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Item `i` untransformed: uint8 (3, H0, W0) RGB image and a source-frame target.

        The target holds every annotation of the image as stored, crowd regions
        included: `labels` int64 (n,), `masks` uint8 (n, H0, W0) from ``annToMask``,
        `boxes` float32 (n, 4) xyxy from the masks, `iscrowd` int64 (n,), `image_id`
        (the position), and where the image came from: `coco_id` (its id in the
        annotation file) and `file_name`.
        """
        index = int(self.indices[i])
        img_id = self.coco_ids[index]
        info = self.coco.imgs[img_id]
        path = self.image_dir / info["file_name"]
        image = read_rgb(path)
        h, w = image.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise DataFormatError(
                f"{path}: image is {h}x{w}; expected {info['height']}x{info['width']} "
                f"(height/width of image id {img_id} in {self.annotation_file})"
            )
        masks, labels, crowd = [], [], []
        for ann in self.coco.imgToAnns.get(img_id, []):
            m = self.coco.annToMask(ann)
            if m.shape != (h, w):
                raise DataFormatError(
                    f"{self.annotation_file}: annotation id {ann.get('id')} decodes to {m.shape}; "
                    f"expected ({h}, {w})"
                )
            masks.append(m)
            labels.append(self.cat_to_label[ann["category_id"]])
            crowd.append(int(bool(ann.get("iscrowd", 0))))
        mask_array = (
            np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), dtype=np.uint8)
        )
        target = {
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(mask_array),
            "boxes": torch.from_numpy(masks_to_boxes(mask_array)),
            "iscrowd": torch.tensor(crowd, dtype=torch.int64),
            "image_id": torch.tensor(index, dtype=torch.int64),
            "coco_id": torch.tensor(img_id, dtype=torch.int64),
            "file_name": info["file_name"],
        }
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), target

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a data set of {len(self)} images")
        image, target = self.load_raw(i % len(self))
        return self.transforms(image, target)


class RawDataset(Protocol):
    class_names: Sequence[str]

    def __len__(self) -> int: ...

    def load_raw(self, i: int) -> tuple[Tensor, dict[str, Tensor]]: ...


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer and inner outlines of a binary mask as COCO polygons [x1, y1, x2, y2, ...].

    Traced at the 0.5 level between pixel centres (contourpy), in pixel-edge coordinates.
    COCO unions polygons, so holes are filled: prefer RLE for masks with holes.
    """
    import contourpy

    padded = np.pad(mask.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded, name="serial").lines(0.5)
    polygons = []
    for line in lines:
        if len(line) >= 4:  # closed line: first point repeated, so >= 3 distinct vertices
            # contour coordinates are pixel centres of the padded array: -1 for the pad,
            # +0.5 to pixel edges
            polygons.append((np.asarray(line)[:-1] - 0.5).round(2).ravel().tolist())
    return polygons


def write_coco_dataset(
    dataset: RawDataset,
    out_dir: str | os.PathLike,
    indices: Sequence[int] | None = None,
    segmentation: str = "rle",
) -> tuple[Path, Path]:
    """Export images and instance masks of `dataset` to a COCO folder.

    Writes `out_dir/images/000000.png ...` and `out_dir/annotations.json` (category
    ids 1..C named after `dataset.class_names`), atomically. `segmentation` is "rle"
    (compressed RLE, exact) or "polygon" (outlines; holes get filled). Returns
    (image_dir, annotation_file).
    """
    if segmentation not in ("rle", "polygon"):
        raise ValueError(f"segmentation must be 'rle' or 'polygon', got {segmentation!r}")
    out_dir = Path(out_dir)
    indices = range(len(dataset)) if indices is None else indices
    categories = [
        {"id": k, "name": n, "supercategory": n} for k, n in enumerate(dataset.class_names, 1)
    ]
    images, annotations = [], []
    with atomic_directory(out_dir) as tmp:
        os.chmod(tmp, 0o755)
        (tmp / IMAGE_DIR).mkdir()
        for image_id, i in enumerate(indices, start=1):
            image, target = dataset.load_raw(int(i))
            file_name = f"{image_id - 1:06d}.png"
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp / IMAGE_DIR / file_name)
            h, w = image.shape[-2:]
            images.append(
                {"id": image_id, "file_name": file_name, "height": int(h), "width": int(w)}
            )
            masks = target["masks"].numpy().astype(np.uint8)
            boxes = masks_to_boxes(masks)
            crowd = target.get("iscrowd", torch.zeros(len(masks), dtype=torch.int64)).tolist()
            for m, label, box, iscrowd in zip(
                masks, target["labels"].tolist(), boxes, crowd, strict=True
            ):
                rle = mask_utils.encode(np.asfortranarray(m))
                segm: list | dict = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
                if segmentation == "polygon":
                    segm = mask_to_polygons(m) or segm
                x1, y1, x2, y2 = box.tolist()
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(label),
                        "segmentation": segm,
                        "area": float(m.sum()),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "iscrowd": int(iscrowd),
                    }
                )
        payload = {"images": images, "annotations": annotations, "categories": categories}
        (tmp / ANNOTATION_FILE).write_text(json.dumps(payload))
    return out_dir / IMAGE_DIR, out_dir / ANNOTATION_FILE
