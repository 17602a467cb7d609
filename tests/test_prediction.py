"""Predictions as files: COCO results with RLE masks, overlays, and the image-folder data set."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from solo_lib.data import DataFormatError, ImageFolderDataset, ImageGeometry, SOLODataModule
from solo_lib.module import LitSOLO
from solo_lib.prediction import PredictionWriter, to_coco_results


def test_coco_results_round_trip_through_rle():
    masks = torch.zeros(2, 30, 40, dtype=torch.bool)
    masks[0, 5:10, 3:20] = True
    masks[1, 20:28, 30:39] = True
    prediction = {
        "masks": masks,
        "labels": torch.tensor([2, 3]),
        "scores": torch.tensor([0.9, 0.4]),
    }
    results = to_coco_results(prediction, image_id=7, category_ids=[10, 20, 30])
    assert [r["category_id"] for r in results] == [20, 30]
    assert [r["image_id"] for r in results] == [7, 7]
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.4])
    json.dumps(results)  # serialisable: counts are str
    for result, mask in zip(results, masks, strict=True):
        decoded = mask_utils.decode(result["segmentation"])
        np.testing.assert_array_equal(decoded, mask.numpy())


def test_no_detections_give_no_entries():
    empty = {
        "masks": torch.zeros(0, 30, 40, dtype=torch.bool),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
    }
    assert to_coco_results(empty, image_id=0) == []


def _write_images(folder, n=2, size=(90, 120)):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"photo_{i}.png")
    return folder


def test_image_folder_items_are_an_image_and_its_metadata_without_ground_truth(
    tmp_path, tiny_config
):
    folder = _write_images(tmp_path / "images")
    dataset = ImageFolderDataset(folder, tiny_config)
    image, meta = dataset[1]
    assert image.shape == (3, *tiny_config.image_size)
    assert set(meta) == {"image_id", "file_name", "geometry"}  # no made-up empty target
    assert meta["geometry"] == ImageGeometry.fit((90, 120), tiny_config.image_size)
    assert meta["file_name"] == "photo_1.png" and meta["image_id"].item() == 1


def test_image_folder_bad_input_names_the_path(tmp_path, tiny_config):
    with pytest.raises(DataFormatError, match="not a folder"):
        ImageFolderDataset(tmp_path / "missing", tiny_config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no image files"):
        ImageFolderDataset(tmp_path / "empty", tiny_config)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="bad.png"):
        ImageFolderDataset(tmp_path / "broken", tiny_config)[0]


def test_prediction_writer_writes_results_and_overlays(tmp_path, tiny_config):
    folder = _write_images(tmp_path / "images", n=3)
    out = tmp_path / "out"
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[PredictionWriter(str(out))],
    )
    datamodule = SOLODataModule(tiny_config, predict_dir=str(folder))
    trainer.predict(LitSOLO(tiny_config), datamodule=datamodule, return_predictions=False)
    results = json.loads((out / "results.json").read_text())
    assert isinstance(results, list)
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == ["photo_0.png", "photo_1.png", "photo_2.png"]
    assert Image.open(out / "overlays" / "photo_0.png").size == (120, 90)
