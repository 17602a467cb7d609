"""Batching and the Lightning data module: one seeded train/val split, one loader setup."""

from __future__ import annotations

import functools
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from solo_lib.config import SOLOConfig
from solo_lib.data.cis680 import CIS680Dataset
from solo_lib.data.coco import CocoInstanceDataset
from solo_lib.data.copy_paste import copy_paste
from solo_lib.data.errors import DataFormatError
from solo_lib.data.folder import ImageFolderDataset
from solo_lib.data.synthetic import MODES, ensure_builtin_dataset

FORMATS = ("cis680", "coco")


def collate(
    batch: list[tuple[Tensor | None, dict[str, Tensor]]], copy_paste_prob: float = 0.0
) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """Stack the (equally padded) images to (B, 3, H, W); keep the targets as a list.

    Targets cannot be stacked: each image has its own number of objects. Items without
    an image (files a prediction folder could not read) are left out; a batch of only
    such items gives an empty (0, 3, 0, 0) tensor and no targets. With
    `copy_paste_prob` > 0 (training), objects are pasted between the batch's images
    (`solo_lib.data.copy_paste`).
    """
    readable = [(image, target) for image, target in batch if image is not None]
    if not readable:
        return torch.empty(0, 3, 0, 0), []
    images = torch.stack([image for image, _ in readable])
    return copy_paste(images, [target for _, target in readable], copy_paste_prob)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random (train, val) split of range(n); both parts sorted, disjoint, complete.

    The validation part has round(n * val_fraction) images, at least one when n > 1
    and val_fraction > 0, and never all of them.
    """
    n_val = round(n * val_fraction)
    if n > 1 and val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class SOLODataModule(pl.LightningDataModule):
    """Train and validation loaders over the built-in, a CIS 680 or a COCO data set.

    Args:
        config: batch size, workers, `val_fraction`, `seed` and the input pipeline.
        root: folder of the CIS 680 files, or the image folder for COCO; None uses the
            built-in data set (generated on first use).
        format: "cis680" or "coco".
        annotation_file: the COCO json (format "coco" only).
        max_images: use only the first `max_images` images (quick runs).
        predict_dir: a folder of images for `predict`; None predicts on the validation split.
        val_root: the validation set's image folder (format "coco"), with
            `val_annotation_file`: a separate validation set, as COCO's train/val pairs
            are. Then all of `root` trains, and `val_fraction` is not used.
        val_annotation_file: the validation set's COCO json.
        builtin: with `root` None, which built-in set: "objects" (the course's vehicles,
            people and animals) or "dense" (20-60 small touching cells of one class per
            image, a stand-in for one's own data; needs num_classes 1, class_names [cell]).
    """

    def __init__(
        self,
        config: SOLOConfig,
        root: str | None = None,
        format: str = "cis680",
        annotation_file: str | None = None,
        max_images: int | None = None,
        predict_dir: str | None = None,
        val_root: str | None = None,
        val_annotation_file: str | None = None,
        builtin: str = "objects",
    ) -> None:
        super().__init__()
        if builtin not in MODES:
            raise ValueError(f"builtin must be one of {sorted(MODES)}, got {builtin!r}")

        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if format == "coco" and (root is None or annotation_file is None):
            raise ValueError("format 'coco' needs root (the image folder) and annotation_file")
        if (val_root is None) != (val_annotation_file is None) or (
            val_root is not None and format != "coco"
        ):
            raise ValueError(
                "a separate validation set needs format 'coco' and both val_root (its image "
                "folder) and val_annotation_file; leave both out for a random split"
            )
        self.config = config
        self.root = root
        self.format = format
        self.annotation_file = annotation_file
        self.max_images = max_images
        self.predict_dir = predict_dir
        self.val_root = val_root
        self.val_annotation_file = val_annotation_file
        self.builtin = builtin
        self.class_names = tuple(config.class_names)
        """Class names of labels 1..C; from the annotation file for COCO (set by `setup`)."""
        self.category_ids: tuple[int, ...] | None = config.category_ids
        """COCO category ids of labels 1..C; from the annotation file (set by `setup`)."""
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    def _dataset(self, train: bool) -> CIS680Dataset | CocoInstanceDataset:
        """All images of `root` (or the built-in set), read and checked."""
        if self.format == "coco":
            return CocoInstanceDataset(self.root, self.annotation_file, self.config, train=train)
        root = self.root if self.root is not None else self._builtin_root()
        return CIS680Dataset(root, self.config, train=train)

    def _builtin_root(self) -> Path:
        """The built-in set's folder, generated on first use, once its classes are checked
        against the config's (here, where it is opened: predicting on a folder never is)."""
        names = MODES[self.builtin].class_names
        if tuple(self.config.class_names) != names:
            raise DataFormatError(
                f"the built-in {self.builtin!r} set has the classes {list(names)}; the "
                f"config has {list(self.config.class_names)}: set "
                f"--model.config.num_classes {len(names)} and "
                f"--model.config.class_names '{list(names)}'"
            )
        return ensure_builtin_dataset(mode=self.builtin)

    def prepare_data(self) -> None:
        """Generate the built-in data set if it is the one asked for (once, on one process)."""
        if self.format == "cis680" and self.root is None:
            self._builtin_root()

    def setup(self, stage: str | None = None) -> None:
        """Build the validation part and, for "fit" (or no stage), the training part;
        idempotent.

        The data set is read and checked once, then split (seeded by `config.seed`).
        Only training needs the training part: its images must hold objects, while
        validating or predicting on images without annotations is allowed. Predicting on
        a folder (`predict_dir`) needs no data set: none is opened, so a model trained on
        other data predicts without the built-in set being checked.
        """
        needs_training = stage in (None, "fit")
        if stage == "predict" and self.predict_dir:
            return
        if self.val_dataset is not None and (self.train_dataset is not None or not needs_training):
            return
        full = self._dataset(train=False)
        n = len(full) if self.max_images is None else min(len(full), self.max_images)
        self.class_names = full.class_names
        self.category_ids = getattr(full, "category_ids", self.category_ids)
        if self.val_root is None:
            train_idx, val_idx = split_indices(n, self.config.val_fraction, self.config.seed)
            self.val_dataset = full.subset(val_idx, train=False)
        else:
            train_idx = list(range(n))
            self.val_dataset = self._validation_file()
        if needs_training:
            self.train_dataset = full.subset(train_idx, train=True)

    def _validation_file(self) -> CocoInstanceDataset:
        """The separate validation set; its category ids must be the training file's.

        Both files' names are checked against the config; the ids could still differ,
        and predictions on the validation file are written with the training file's.
        """
        val = CocoInstanceDataset(self.val_root, self.val_annotation_file, self.config)
        if val.category_ids != self.category_ids:
            raise DataFormatError(
                f"{self.val_annotation_file}: category ids {list(val.category_ids)}; expected "
                f"those of {self.annotation_file}, {list(self.category_ids)}"
            )
        return val

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """Batches of `dataset`; shuffled, seeded and with copy-paste for training."""
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=functools.partial(
                collate, copy_paste_prob=self.config.copy_paste_prob if shuffle else 0.0
            ),
            generator=torch.Generator().manual_seed(self.config.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The validation split (the course has no separate test split)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The images of `predict_dir`, or the validation split when it is None."""
        if self.predict_dir is None:
            self.setup("predict")
            return self._loader(self.val_dataset, shuffle=False)
        return self._loader(ImageFolderDataset(self.predict_dir, self.config), shuffle=False)
