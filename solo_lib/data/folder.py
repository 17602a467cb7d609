"""A folder of images to predict on: each image with its metadata, and no ground truth."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from solo_lib.config import SOLOConfig
from solo_lib.data.errors import DataFormatError
from solo_lib.data.geometry import ImageGeometry
from solo_lib.data.images import read_rgb
from solo_lib.data.transforms import Compose, Normalize, ToFloatImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageFolderDataset(Dataset):
    """Every image file in `folder` (sorted by name), for `python -m solo_lib predict`.

    Items are ``(image, meta)``: the input image as the data sets make it, and the
    metadata that prediction needs, ``image_id``, ``file_name`` (so that predictions
    can be traced back to their file) and ``geometry`` (the way back to the original
    image). There is no ground truth, and none is made up.
    """

    def __init__(self, folder: str | Path, cfg: SOLOConfig) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataFormatError(f"{self.folder}: not a folder; expected a folder of images")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise DataFormatError(
                f"{self.folder}: no image files; expected names ending in {', '.join(IMAGE_SUFFIXES)}"
            )
        self.class_names = tuple(cfg.class_names)
        self.image_size = cfg.image_size
        self.normalize = Compose([ToFloatImage(), Normalize(cfg.pixel_mean, cfg.pixel_std)])

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, i: int) -> Tensor:
        """Image `i` as uint8 (3, H0, W0) RGB."""
        return torch.from_numpy(read_rgb(self.files[i])).permute(2, 0, 1)

    def __getitem__(self, i: int) -> tuple[Tensor | None, dict]:
        """``(image, meta)``: the input image and ``{"image_id", "file_name", "geometry"}``.

        A file that cannot be decoded gives ``(None, {"image_id", "file_name"})`` and a
        warning: one broken file among thousands must not stop a prediction run
        (`collate` leaves it out; `PredictionWriter` counts it).
        """
        try:
            image = self.load_image(i)
        except DataFormatError as err:
            warnings.warn(f"skipped: {err}", stacklevel=2)
            return None, {
                "image_id": torch.tensor(i, dtype=torch.int64),
                "file_name": self.files[i].name,
            }
        geometry = ImageGeometry.fit(image.shape[-2:], self.image_size)
        pixels, _ = self.normalize(image, {})
        meta = {
            "image_id": torch.tensor(i, dtype=torch.int64),
            "file_name": self.files[i].name,
            "geometry": geometry,
        }
        return geometry.image_to_input(pixels), meta
