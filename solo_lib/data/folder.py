"""A folder of images to predict on: the item contract with an empty target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from solo_lib.config import SOLOConfig
from solo_lib.data.errors import DataFormatError
from solo_lib.data.transforms import build_transforms

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageFolderDataset(Dataset):
    """Every image file in `folder` (sorted by name), for `python -m solo_lib predict`.

    Items follow the data sets' contract, with no objects in the target, plus
    ``file_name`` so that predictions can be traced back to their file.
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
        self.transforms = build_transforms(cfg, train=False)

    def __len__(self) -> int:
        return len(self.files)

    def load_raw(self, i: int) -> tuple[Tensor, dict]:
        """Image `i` as uint8 (3, H0, W0) and an empty source-frame target."""
        path = self.files[i]
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except OSError as err:
            raise DataFormatError(f"{path}: cannot be read as an image ({err})") from None
        h, w = array.shape[:2]
        target = {
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros((0, h, w), dtype=torch.uint8),
            "boxes": torch.zeros((0, 4), dtype=torch.float32),
            "image_id": torch.tensor(i, dtype=torch.int64),
        }
        return torch.from_numpy(array.copy()).permute(2, 0, 1), target

    def __getitem__(self, i: int) -> tuple[Tensor, dict]:
        image, target = self.transforms(*self.load_raw(i))
        target["file_name"] = self.files[i].name
        return image, target
