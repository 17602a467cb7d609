"""COCO-format instance segmentation: a data set reader and a writer.

`CocoInstanceDataset` reads an `instances_*.json`-style annotation file with
pycocotools (polygons, uncompressed and compressed RLE) and yields the same items
as `CIS680Dataset`, so a custom data set trains without code changes. Category ids
are mapped to labels 1..C in sorted id order, and the config's `class_names` must be
the file's category names in that order (the evaluator and the pictures use them).
Crowd annotations (`iscrowd` = 1) are read with their flag: training skips them (SOLO
has no use for a mask of many objects), evaluation ignores detections on them, as
pycocotools does.

`write_coco_dataset` exports any data set with `load_raw(i)` and `class_names`
(e.g. the built-in one) to a COCO folder, which is how the tests and notebook 01
make a small COCO set without downloading one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections import defaultdict
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
from solo_lib.data.errors import (
    DataFormatError,
    checked_indices,
    refuse_training_without_objects,
    warn_objects_without_pixels,
)
from solo_lib.data.images import read_rgb, upright_size
from solo_lib.data.transforms import PairTransform, build_transforms

ANNOTATION_FILE = "annotations.json"
IMAGE_DIR = "images"

#: The keys every entry of each list needs: pycocotools indexes entries by id and
#: annotations by image and category, masks are decoded at an image's height and width,
#: images are read from their file_name, and label k is named after a category's name.
REQUIRED_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id"),
    "categories": ("id", "name"),
}
#: What one entry of each list is called in messages.
ENTRY_NAMES = {"images": "image", "annotations": "annotation", "categories": "category"}
#: The keys that identify an entry in messages (a segmentation is too long to print).
IDENTIFYING_KEYS = ("id", "file_name", "image_id", "category_id", "name")


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
    for key in REQUIRED_KEYS:
        if not isinstance(dataset.get(key), list):
            raise DataFormatError(f"{annotation_file}: no list {key!r}; expected {expected}")
    for key, required in REQUIRED_KEYS.items():
        check_entry_keys(dataset[key], key, required, annotation_file)
        refuse_duplicate_ids(dataset[key], key, annotation_file)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def check_entry_keys(
    entries: list, key: str, required: tuple[str, ...], annotation_file: Path
) -> None:
    """Every entry of the list `key` is an object with the `required` keys.

    pycocotools would answer a missing id with a bare ``KeyError``, and a missing height
    much later, when a mask is decoded.
    """
    for entry in entries:
        if not isinstance(entry, dict) or not set(required) <= entry.keys():
            listed = ", ".join(repr(k) for k in required[:-1]) + f" or {required[-1]!r}"
            raise DataFormatError(
                f"{annotation_file}: {ENTRY_NAMES[key]} entry {str(entry)[:80]} lacks {listed}; "
                f"every entry of {key!r} needs all of them"
            )


def refuse_duplicate_ids(entries: list[dict], key: str, annotation_file: Path) -> None:
    """Refuse two entries of the list `key` with one id, naming the id and the entries.

    pycocotools indexes each list by id, so all but the last of them would vanish: a
    duplicate image id shows up later as annotations whose image is "not in 'images'",
    a duplicate category id as a wrong number of categories.
    """
    positions: dict[object, list[int]] = defaultdict(list)
    for position, entry in enumerate(entries):
        positions[entry["id"]].append(position)
    for entry_id, shared in positions.items():
        if len(shared) > 1:
            listed = "; ".join(f"entry {p}: {identify(entries[p])}" for p in shared)
            raise DataFormatError(
                f"{annotation_file}: duplicate {ENTRY_NAMES[key]} id {entry_id!r}, shared by "
                f"{len(shared)} entries of {key!r} ({listed}); expected each id once"
            )


def identify(entry: dict) -> dict:
    """The keys of `entry` that tell it apart from the others (`IDENTIFYING_KEYS`)."""
    return {k: entry[k] for k in IDENTIFYING_KEYS if k in entry}


def check_categories(coco: COCO, cfg: SOLOConfig, annotation_file: Path) -> tuple[int, ...]:
    """The file's category ids in label order (sorted), checked against the config.

    Label k is the k-th category in sorted id order, and the evaluator and the pictures
    name it ``cfg.class_names[k - 1]``: the number of categories, their ids (when the
    config or checkpoint has them) and their names in id order must all agree, or
    per-class AP and overlays carry the wrong names without an error.
    """
    cat_ids = tuple(sorted(coco.cats))
    if len(cat_ids) != cfg.num_classes:
        raise DataFormatError(
            f"{annotation_file}: 'categories' has {len(cat_ids)} entries {list(cat_ids)}; expected "
            f"cfg.num_classes = {cfg.num_classes} (set num_classes and class_names in the config)"
        )
    if cfg.category_ids is not None and tuple(cfg.category_ids) != cat_ids:
        raise DataFormatError(
            f"{annotation_file}: category ids {list(cat_ids)}; the model's are "
            f"{list(cfg.category_ids)} (category_ids in the config or checkpoint)"
        )
    names = [coco.cats[cid]["name"] for cid in cat_ids]
    if names != list(cfg.class_names):
        in_id_order = ", ".join(f"{cid}: {name}" for cid, name in zip(cat_ids, names, strict=True))
        raise DataFormatError(
            f"{annotation_file}: categories in id order {in_id_order}; the config's "
            f"class_names are {list(cfg.class_names)}. Label k is the k-th category in "
            f"sorted id order: expected class_names {names} (class_names in the config or "
            "checkpoint)"
        )
    return cat_ids


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
        cfg: input size, normalisation, augmentation; `cfg.num_classes` and
            `cfg.class_names` must be the file's categories in sorted id order.
        train: training-time augmentation; a training set must hold annotated objects.
        indices: optional subset (positions in the image list sorted by image id).
        transforms: replaces `build_transforms(cfg, train)`.

    Everything is checked when the data set is built: the file's form, unique ids, the
    categories against `cfg` (number, ids, names in id order), every image file and its
    size, every segmentation. Annotations that cover no pixel are left out with a warning.
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
        #: The COCO category ids of labels 1..C: the file's ids, sorted.
        self.category_ids = check_categories(self.coco, cfg, self.annotation_file)
        #: COCO category id -> label 1..C, in sorted id order
        self.cat_to_label = {cid: k for k, cid in enumerate(self.category_ids, start=1)}
        #: The config's names, checked to be the file's in id order (`check_categories`).
        self.class_names = tuple(cfg.class_names)
        self.coco_ids = sorted(self.coco.getImgIds())
        self._check_image_files()
        #: COCO image id -> its annotations, checked, without those that cover no pixel
        self.image_annotations = self._annotations_with_pixels()
        self.indices = checked_indices(indices, len(self.coco_ids))
        if train:
            self._refuse_training_without_objects()

    def subset(self, indices: Sequence[int], train: bool) -> CocoInstanceDataset:
        """Images `indices` of this set, with `build_transforms(cfg, train)`.

        A shallow copy: the file is read and checked once, however it is split (the data
        module's train and validation parts).
        """
        part = copy.copy(self)
        part.indices = checked_indices(indices, len(self.coco_ids))
        part.transforms = build_transforms(self.cfg, train)
        if train:
            part._refuse_training_without_objects()
        return part

    # ----------------------------------------------------------------- validation
    def _check_image_files(self) -> None:
        """Every image file exists and has its entry's size, read from the file headers.

        Checked here, so that a wrong file fails when the data set is built, not when an
        epoch first reads it.
        """
        for img_id in self.coco_ids:
            info = self.coco.imgs[img_id]
            path = self.image_dir / info["file_name"]
            if not path.is_file():
                raise DataFormatError(
                    f"{path}: image file not found (image id {img_id} in {self.annotation_file})"
                )
            self._check_image_size(path, upright_size(path), info)

    def _check_image_size(self, path: Path, size: tuple[int, int], info: dict) -> None:
        """Refuse the image in `path`, of (height, width) `size`, unless its entry `info`
        says the same: masks are decoded at the entry's size. `size` is taken after the
        EXIF orientation, as `read_rgb` turns camera photos upright."""
        if tuple(size) != (info["height"], info["width"]):
            raise DataFormatError(
                f"{path}: image is {size[0]}x{size[1]}; expected {info['height']}x{info['width']} "
                f"(height/width of image id {info['id']} in {self.annotation_file})"
            )

    def _annotations_with_pixels(self) -> dict[int, list[dict]]:
        """Each image's annotations, checked, in file order, without those that cover no
        pixel (left out with one warning, `warn_objects_without_pixels`).

        Areas are counted on the run-length encoding, without decoding a mask.
        """
        kept: dict[int, list[dict]] = {img_id: [] for img_id in self.coco_ids}
        empty = []
        annotations = self.coco.dataset["annotations"]
        for ann in annotations:
            if ann["category_id"] not in self.cat_to_label:
                raise DataFormatError(
                    f"{self.annotation_file}: annotation id {ann['id']} has category_id "
                    f"{ann['category_id']!r}; expected one of {list(self.category_ids)}"
                )
            check_segmentation(ann, self.coco.imgs, self.annotation_file)
            if mask_utils.area(self.coco.annToRLE(ann)) > 0:
                kept[ann["image_id"]].append(ann)
            else:
                info = self.coco.imgs[ann["image_id"]]
                empty.append(
                    f"annotation id {ann['id']} (image id {info['id']}, "
                    f"{info['width']}x{info['height']})"
                )
        if empty:
            warn_objects_without_pixels(
                self.annotation_file, empty, len(annotations), "annotations"
            )
        return kept

    def _refuse_training_without_objects(self) -> None:
        """`refuse_training_without_objects` on this set's images; crowd regions do not count."""
        objects = sum(
            not ann.get("iscrowd", 0)
            for index in self.indices
            for ann in self.image_annotations[self.coco_ids[index]]
        )
        refuse_training_without_objects(self.annotation_file, objects, len(self.indices))

    # ----------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.indices)

    def load_raw(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Item `i` untransformed: uint8 (3, H0, W0) RGB image and a source-frame target.

        The target holds every annotation of the image as stored, crowd regions
        included (those that cover no pixel were left out when the set was built):
        `labels` int64 (n,), `masks` uint8 (n, H0, W0) from ``annToMask``, `boxes`
        float32 (n, 4) xyxy from the masks, `iscrowd` int64 (n,), `image_id` (the
        position), and where the image came from: `coco_id` (its id in the annotation
        file) and `file_name`.
        """
        index = int(self.indices[i])
        img_id = self.coco_ids[index]
        info = self.coco.imgs[img_id]
        path = self.image_dir / info["file_name"]
        image = read_rgb(path)
        h, w = image.shape[:2]
        self._check_image_size(path, (h, w), info)  # again: the file may have changed since
        masks, labels, crowd = [], [], []
        for ann in self.image_annotations[img_id]:
            masks.append(self.coco.annToMask(ann))  # at the entry's size, checked above
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
