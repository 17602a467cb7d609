"""The CIS 680 data format (a 3-class COCO subset), loaded exactly as the homework ships it.

Four files in one folder:

==========================================  ===============================================
``hw3_mycocodata_img_comp_zlib.h5``         key ``data``: (N, 3, H, W) RGB, any integer dtype
``hw3_mycocodata_mask_comp_zlib.h5``        key ``data``: (M, H, W) binary masks of ALL
                                            images, concatenated in image order
``hw3_mycocodata_labels_comp_zlib.npy``     object array (N,), entry i: int array (n_i,) in 1..C
``hw3_mycocodata_bboxes_comp_zlib.npy``     object array (N,), entry i: float (n_i, 4) x1 y1 x2 y2
==========================================  ===============================================

Image i owns masks offsets[i]:offsets[i + 1] with offsets the cumulative sum of the
label counts. Everything is checked when the data set is built, so a broken or
mismatched file fails at once with a `DataFormatError` naming the file and field,
not as an index error deep inside a training run. Masks that cover no pixel are left
out then, with one warning, together with their labels and boxes.

The h5 files are opened lazily, once per process: DataLoader workers each open
their own handles, and open handles are never pickled.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from solo_lib.config import SOLOConfig
from solo_lib.data.errors import (
    DataFormatError,
    checked_indices,
    refuse_training_without_objects,
    warn_objects_without_pixels,
)
from solo_lib.data.transforms import PairTransform, build_transforms

IMAGES_FILE = "hw3_mycocodata_img_comp_zlib.h5"
MASKS_FILE = "hw3_mycocodata_mask_comp_zlib.h5"
LABELS_FILE = "hw3_mycocodata_labels_comp_zlib.npy"
BBOXES_FILE = "hw3_mycocodata_bboxes_comp_zlib.npy"
H5_KEY = "data"
#: Masks read at once when every mask is checked (64 masks of 300x400: 7.7 MB as uint8).
MASK_CHUNK = 64


def mask_offsets(labels: Sequence[np.ndarray]) -> np.ndarray:
    """(N + 1,) int64 offsets into the flat mask array: image i owns masks
    ``offsets[i]:offsets[i + 1]``.

    `labels` holds one array of labels (n_i,) per image. The mask file stores no image
    index, only the order: image i's n_i masks follow those of images 0..i-1, so the
    offsets are the cumulative object counts, starting at 0 (an image without objects
    owns the empty slice ``offsets[i]:offsets[i]``).
    """
    counts = np.array([len(image_labels) for image_labels in labels], dtype=np.int64)  # (N,)
    return np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(counts)])


def _open_h5(path: Path) -> h5py.File:
    """Open an h5 file read-only; a truncated or corrupt file becomes a DataFormatError."""
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found (expected one of the four CIS 680 files)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataFormatError(
            f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}"
        ) from err


def _h5_shape(path: Path, ndim: int, form: str) -> tuple[tuple[int, ...], np.dtype]:
    with _open_h5(path) as f:
        if H5_KEY not in f or not isinstance(f[H5_KEY], h5py.Dataset):
            raise DataFormatError(f"{path}: key {H5_KEY!r} missing; expected a dataset {form}")
        ds = f[H5_KEY]
        if ds.ndim != ndim:
            raise DataFormatError(f"{path}: key {H5_KEY!r} has shape {ds.shape}; expected {form}")
        return tuple(ds.shape), ds.dtype


#: What a pickled object array of numpy arrays refers to (numpy 1.x files say
#: ``numpy.core``, numpy 2.x files ``numpy._core``); nothing else may be unpickled.
NUMPY_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and dtypes, and refuses every other object.

    A plain ``np.load(allow_pickle=True)`` runs whatever a pickle asks for (its
    ``__reduce__``), so a crafted labels file could run code before any check.
    """

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in NUMPY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}")
        return super().find_class(module, name)


def _load_object_array(path: Path) -> np.ndarray:
    """Load a .npy of per-image arrays: numpy's format, object arrays unpickled safely.

    The .npy magic and header are checked first; an object array (a pickle) is then
    read with `_NumpyOnlyUnpickler`, which builds numpy arrays and nothing else.
    """
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found (expected one of the four CIS 680 files)")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            _, _, dtype = read_header(f)
            if dtype.hasobject:
                data = _NumpyOnlyUnpickler(f).load()
            else:
                f.seek(0)
                data = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise DataFormatError(
            f"{path}: not a readable .npy file of numpy arrays ({err}); expected an array with "
            "one entry per image, saved with np.save"
        ) from None
    if not isinstance(data, np.ndarray):
        raise DataFormatError(
            f"{path}: holds a {type(data).__name__}; expected a numpy array, one entry per image"
        )
    if data.ndim == 0:
        raise DataFormatError(f"{path}: holds a scalar; expected an array with one entry per image")
    return data


class CIS680Dataset(Dataset):
    """The CIS 680 files in `root` as a map-style data set of `(image, target)` items.

    Items are ``(image, target)``: a normalised, padded float32 (3, H, W) image and a
    target with `labels`, `masks`, `boxes` (input frame), `image_id`, `geometry` (an
    `ImageGeometry`: the way back to the original image) and, for evaluation
    (``train=False``), `original`: the annotations as stored (see
    `solo_lib.data.transforms`). `image_id` is the index in the FILES, also when
    `indices` selects a subset, so that predictions can be traced back.

    The two .npy files are object arrays, i.e. Python pickles; they are unpickled
    with an unpickler that builds numpy arrays and refuses anything else.

    Masks that cover no pixel are left out (with one warning), with their labels and
    boxes: `labels` and `boxes` hold the objects kept, `offsets` and `covers` describe
    the mask file.

    Args:
        root: folder holding the four files.
        cfg: supplies the input size, normalisation, augmentation and `num_classes`.
        train: training-time augmentation (scale jitter, horizontal flip); a training
            set must hold objects.
        indices: optional subset of image indices (for train/val splits).
        box_tolerance: how far (pixels) a box may reach outside the image.
        transforms: replaces `build_transforms(cfg, train)`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        cfg: SOLOConfig,
        train: bool = False,
        indices: Sequence[int] | None = None,
        box_tolerance: float = 1.0,
        transforms: PairTransform | None = None,
    ) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.class_names = tuple(cfg.class_names)
        self.transforms = transforms if transforms is not None else build_transforms(cfg, train)
        self.images_path = self.root / IMAGES_FILE
        self.masks_path = self.root / MASKS_FILE
        self._validate(box_tolerance)
        self.indices = checked_indices(indices, len(self.labels))
        if train:
            self._refuse_training_without_objects()
        self._handles: tuple[h5py.File, h5py.File] | None = None
        self._pid: int | None = None

    def subset(self, indices: Sequence[int], train: bool) -> CIS680Dataset:
        """Images `indices` of this set, with `build_transforms(cfg, train)`.

        A copy without open files: the files are read and checked once, however they are
        split (the data module's train and validation parts).
        """
        part = copy.copy(self)  # goes through __getstate__: no h5 handles are shared
        part.indices = checked_indices(indices, len(self.labels))
        part.transforms = build_transforms(self.cfg, train)
        if train:
            part._refuse_training_without_objects()
        return part

    def _refuse_training_without_objects(self) -> None:
        """`refuse_training_without_objects` on this set's images."""
        objects = sum(len(self.labels[index]) for index in self.indices)
        refuse_training_without_objects(self.masks_path, objects, len(self.indices))

    # ----------------------------------------------------------------- validation
    def _validate(self, box_tolerance: float) -> None:
        img_shape, img_dtype = _h5_shape(self.images_path, 4, "(N, 3, H, W) of integer RGB values")
        if img_shape[1] != 3:
            raise DataFormatError(
                f"{self.images_path}: key {H5_KEY!r} has shape {img_shape}; expected (N, 3, H, W) "
                "channel-first RGB"
            )
        if not np.issubdtype(img_dtype, np.integer):
            raise DataFormatError(
                f"{self.images_path}: key {H5_KEY!r} has dtype {img_dtype}; expected an integer dtype "
                "with values 0..255"
            )
        n, _, h, w = img_shape
        mask_shape, mask_dtype = _h5_shape(self.masks_path, 3, f"(M, {h}, {w}) binary masks")
        if mask_shape[1:] != (h, w):
            raise DataFormatError(
                f"{self.masks_path}: key {H5_KEY!r} has shape {mask_shape}; expected (M, {h}, {w}) "
                f"to match the images {img_shape}"
            )
        labels_path, bboxes_path = self.root / LABELS_FILE, self.root / BBOXES_FILE
        raw_labels, raw_boxes = _load_object_array(labels_path), _load_object_array(bboxes_path)
        if len(raw_labels) != n or len(raw_boxes) != n:
            raise DataFormatError(
                f"{self.root}: {LABELS_FILE} has {len(raw_labels)} entries and {BBOXES_FILE} "
                f"{len(raw_boxes)}; expected one per image, N = {n} (from {IMAGES_FILE})"
            )
        num_classes = self.cfg.num_classes
        self.labels: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        for i in range(n):
            labels = np.asarray(raw_labels[i]).reshape(-1)
            if labels.size and not (
                np.issubdtype(labels.dtype, np.number) and np.array_equal(labels, np.round(labels))
            ):
                raise DataFormatError(
                    f"{labels_path}: entry {i} = {labels!r}; expected an integer array of labels 1..{num_classes}"
                )
            labels = labels.astype(np.int64)
            if labels.size and (labels.min() < 1 or labels.max() > num_classes):
                raise DataFormatError(
                    f"{labels_path}: entry {i} has labels {labels.tolist()}; expected values in 1..{num_classes} "
                    "(0 is background and never stored)"
                )
            boxes = np.asarray(raw_boxes[i], dtype=np.float64)
            if boxes.size == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels):
                raise DataFormatError(
                    f"{bboxes_path}: entry {i} has shape {boxes.shape}; expected ({len(labels)}, 4) "
                    f"x1 y1 x2 y2, one box per label in {LABELS_FILE}"
                )
            tol = box_tolerance
            # Written as "good" so that NaN (every comparison false) counts as bad.
            good = (
                (boxes[:, 0] >= -tol)
                & (boxes[:, 1] >= -tol)
                & (boxes[:, 2] <= w + tol)
                & (boxes[:, 3] <= h + tol)
                & (boxes[:, 2] > boxes[:, 0])
                & (boxes[:, 3] > boxes[:, 1])
            )
            if not good.all():
                j = int(np.flatnonzero(~good)[0])
                raise DataFormatError(
                    f"{bboxes_path}: entry {i}, box {j} = {boxes[j].tolist()} is empty, not finite "
                    f"or outside the {w}x{h} image; expected x1 < x2 in [0, {w}] and y1 < y2 in "
                    f"[0, {h}] (tolerance {tol} px)"
                )
            self.labels.append(labels)
            self.boxes.append(boxes)
        #: image i owns masks offsets[i]:offsets[i + 1] of the flat mask array
        self.offsets = mask_offsets(self.labels)
        if self.offsets[-1] != mask_shape[0]:
            raise DataFormatError(
                f"{self.masks_path}: key {H5_KEY!r} holds {mask_shape[0]} masks; expected "
                f"{self.offsets[-1]}, the sum of the label counts in {LABELS_FILE}"
            )
        self.source_size = (h, w)
        #: (M,) bool: whether mask j of the file covers a pixel (the others are left out)
        self.covers = self._scan_masks(np.issubdtype(mask_dtype, np.floating))
        self._leave_out_empty_masks()

    def _scan_masks(self, is_float: bool) -> np.ndarray:
        """(M,) bool: whether each mask covers a pixel, and float masks hold 0 and 1 only.

        Soft or NaN float masks would silently binarise to something else. Every mask is
        read here, once, in chunks, so that a bad file fails, and an empty mask is left
        out, before training.
        """
        covers = np.zeros(int(self.offsets[-1]), dtype=bool)
        with _open_h5(self.masks_path) as f:
            masks = f[H5_KEY]
            for start in range(0, len(covers), MASK_CHUNK):
                chunk = np.asarray(masks[start : start + MASK_CHUNK])
                chunk = chunk.reshape(len(chunk), -1)
                if is_float:
                    self._refuse_soft_masks(chunk, start)
                covers[start : start + len(chunk)] = chunk.any(axis=1)
        return covers

    def _refuse_soft_masks(self, chunk: np.ndarray, start: int) -> None:
        """Refuse float masks `chunk` (n, H * W), masks start.. of the file, unless all 0/1."""
        bad = ~((chunk == 0) | (chunk == 1)).all(axis=1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            values = np.unique(chunk[j])
            raise DataFormatError(
                f"{self.masks_path}: mask {start + j} (image {self._image_of(start + j)}) holds "
                f"values {values[:5].tolist()}...; expected binary masks of 0 and 1 "
                "(threshold soft masks before saving them)"
            )

    def _leave_out_empty_masks(self) -> None:
        """Drop the labels and boxes of masks that cover no pixel, with one warning."""
        empty = np.flatnonzero(~self.covers)
        if not empty.size:
            return
        for i in {self._image_of(int(j)) for j in empty}:
            keep = self.covers[self.offsets[i] : self.offsets[i + 1]]
            self.labels[i], self.boxes[i] = self.labels[i][keep], self.boxes[i][keep]
        h, w = self.source_size
        named = [f"mask {j} (image {self._image_of(int(j))}, {w}x{h})" for j in empty]
        warn_objects_without_pixels(self.masks_path, named, len(self.covers), "masks")

    def _image_of(self, mask: int) -> int:
        """The image that owns mask `mask` of the file."""
        return int(np.searchsorted(self.offsets, mask, side="right")) - 1

    # ----------------------------------------------------------------- h5 handles
    def _files(self) -> tuple[h5py.File, h5py.File]:
        """This process's open (images, masks) files, opened on first use."""
        if self._handles is None or self._pid != os.getpid():
            self._handles = (_open_h5(self.images_path), _open_h5(self.masks_path))
            self._pid = os.getpid()
        return self._handles

    def close(self) -> None:
        """Close this process's h5 handles (they reopen on the next read)."""
        if self._handles is not None and self._pid == os.getpid():
            for f in self._handles:
                f.close()
        self._handles, self._pid = None, None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = None, None
        return state

    # ----------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.indices)

    def load_raw(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Item `i` untransformed: uint8 (3, H0, W0) image and a source-frame target.

        The target holds `labels` int64 (n,), `masks` uint8 (n, H0, W0) 0/1, `boxes`
        float32 (n, 4) xyxy, `iscrowd` int64 (n,) (all 0: the format has no crowd
        regions) and `image_id` int64 (the file index).
        """
        index = int(self.indices[i])
        images, masks = self._files()
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        try:
            image = np.asarray(images[H5_KEY][index])
            mask = np.asarray(masks[H5_KEY][start:stop])[self.covers[start:stop]]
        except OSError as err:
            raise DataFormatError(
                f"{self.images_path} / {self.masks_path}: cannot read image {index} (masks {start}:{stop}): {err}"
            ) from err
        if image.size and (image.min() < 0 or image.max() > 255):
            raise DataFormatError(
                f"{self.images_path}: image {index} has values {image.min()}..{image.max()}; expected 0..255"
            )
        binary = mask != 0  # float masks are checked to hold 0 and 1 only (_refuse_soft_masks)
        target = {
            "labels": torch.from_numpy(self.labels[index].copy()),
            "masks": torch.from_numpy(binary.astype(np.uint8)),
            "boxes": torch.from_numpy(self.boxes[index].astype(np.float32)),
            "iscrowd": torch.zeros(len(self.labels[index]), dtype=torch.int64),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        return torch.from_numpy(image.astype(np.uint8)), target

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a data set of {len(self)} images")
        image, target = self.load_raw(i % len(self))
        return self.transforms(image, target)


def summary(root: str | os.PathLike, cfg: SOLOConfig | None = None) -> dict:
    """Counts and sizes of the CIS 680 files in `root`, for printing.

    Keys: `num_images`, `num_masks`, `image_size` (H0, W0), `per_class` {name: count},
    `objects_per_image` (min, mean, max), `object_size` (min, median, max) of
    sqrt(w * h) in source pixels, `disk_mb` of the four files.
    """
    cfg = cfg or SOLOConfig()
    data = CIS680Dataset(root, cfg)
    labels = np.concatenate(data.labels) if data.labels else np.zeros(0, np.int64)
    boxes = np.concatenate(data.boxes) if data.boxes else np.zeros((0, 4))
    sizes = np.sqrt(
        np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    )
    counts = np.diff(data.offsets)
    files = (IMAGES_FILE, MASKS_FILE, LABELS_FILE, BBOXES_FILE)
    return {
        "num_images": len(data),
        "num_masks": int(data.offsets[-1]),
        "image_size": data.source_size,
        "per_class": {
            name: int((labels == c).sum()) for c, name in enumerate(data.class_names, start=1)
        },
        "objects_per_image": (int(counts.min()), round(float(counts.mean()), 2), int(counts.max())),
        "object_size": (
            (
                round(float(sizes.min()), 1),
                round(float(np.median(sizes)), 1),
                round(float(sizes.max()), 1),
            )
            if sizes.size
            else (0.0, 0.0, 0.0)
        ),
        "disk_mb": round(sum((Path(root) / f).stat().st_size for f in files) / 2**20, 1),
    }
