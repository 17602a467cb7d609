"""Data: the CIS 680 format, COCO, the built-in synthetic set, transforms, batching."""

from solo_lib.data.cis680 import CIS680Dataset, summary
from solo_lib.data.coco import CocoInstanceDataset, write_coco_dataset
from solo_lib.data.datamodule import SOLODataModule, collate, split_indices
from solo_lib.data.errors import DataFormatError
from solo_lib.data.folder import ImageFolderDataset
from solo_lib.data.geometry import ImageGeometry
from solo_lib.data.synthetic import ensure_builtin_dataset, render_image, write_dataset
from solo_lib.data.transforms import build_transforms

__all__ = [
    "CIS680Dataset",
    "CocoInstanceDataset",
    "DataFormatError",
    "ImageFolderDataset",
    "ImageGeometry",
    "SOLODataModule",
    "build_transforms",
    "collate",
    "ensure_builtin_dataset",
    "render_image",
    "split_indices",
    "summary",
    "write_coco_dataset",
    "write_dataset",
]
