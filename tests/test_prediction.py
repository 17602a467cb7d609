"""Predictions as files: COCO results with RLE masks, overlays, and the image-folder data set."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from solo_lib.data import (
    CIS680Dataset,
    DataFormatError,
    ImageFolderDataset,
    ImageGeometry,
    SOLODataModule,
    write_coco_dataset,
    write_dataset,
)
from solo_lib.module import LitSOLO
from solo_lib.prediction import PredictionWriter, overlay_name, to_coco_results


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
    with pytest.warns(UserWarning, match="skipped: .*bad.png: cannot be read"):
        image, meta = ImageFolderDataset(tmp_path / "broken", tiny_config)[0]
    assert image is None and meta["file_name"] == "bad.png"


def assert_results_match(
    results: list[dict],
    predictions: dict[int, dict],
    category_ids: list[int] | None = None,
) -> None:
    """`results` (``results.json``'s entries) hold exactly `predictions` (instances per
    image id, as `SOLO.predict` returns them): per image, in order, the category id of
    each label (``category_ids[label - 1]``, or the label), the score to 1e-6 and the
    mask, decoded from its RLE. (test_cli uses it too.)"""
    by_image: dict[int, list[dict]] = {}
    for entry in results:
        by_image.setdefault(entry["image_id"], []).append(entry)
    expected = {image_id: p for image_id, p in predictions.items() if len(p["labels"])}
    assert sorted(by_image) == sorted(expected)
    for image_id, prediction in expected.items():
        entries = by_image[image_id]
        labels = prediction["labels"].tolist()
        ids = [category_ids[label - 1] for label in labels] if category_ids else labels
        assert [e["category_id"] for e in entries] == ids, image_id
        scores = [e["score"] for e in entries]
        assert scores == pytest.approx(prediction["scores"].tolist(), abs=1e-6), image_id
        masks = np.stack([mask_utils.decode(e["segmentation"]) for e in entries]).astype(bool)
        np.testing.assert_array_equal(masks, prediction["masks"].numpy(), err_msg=str(image_id))


def predictions_by_image(batches: list[tuple]) -> dict[int, dict]:
    """The instances of `Trainer.predict`'s outputs (`predict_step`'s ``(images, targets,
    predictions)`` per batch) by image id: a COCO set's own, else the target's."""
    return {
        int(target.get("coco_id", target["image_id"])): prediction
        for _, targets, predictions in batches
        for target, prediction in zip(targets, predictions, strict=True)
    }


def _eager(cfg):
    """`cfg` with thresholds low enough that an untrained model predicts instances."""
    return cfg.replace(score_threshold=0.005, mask_threshold=0.005, update_threshold=1e-6)


def _predict(model, folder, out, cfg):
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[PredictionWriter(str(out), overlays=False)],
    )
    trainer.predict(model, datamodule=SOLODataModule(cfg, predict_dir=str(folder)))


def test_unreadable_files_are_skipped_and_counted(tmp_path, tiny_config, capsys):
    cfg = _eager(tiny_config).replace(batch_size=2)
    folder = _write_images(tmp_path / "images", n=3)
    (folder / "photo_1b.png").write_bytes(b"truncated")  # batch 1: photo_1b, photo_2
    (folder / "photo_0b.jpg").write_bytes(b"")  # batch 0: photo_0, photo_0b
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="skipped"):
        _predict(LitSOLO(cfg), folder, tmp_path / "out", cfg)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["image_id"] for r in results} == {0, 2, 4}  # photo_0, photo_1, photo_2
    summary = capsys.readouterr().out.split("wrote")[-1]
    assert "of 3 images" in summary and "skipped 2 unreadable files" in summary
    assert not list((tmp_path / "out").glob("*.partial.jsonl"))
    # overlays=False: no overlay folder, and the summary does not claim one
    assert not (tmp_path / "out" / "overlays").exists() and "overlays" not in summary


class _DiesOnSecondBatch(LitSOLO):
    def predict_step(self, batch, batch_idx):
        if batch_idx == 1:
            raise RuntimeError("killed")
        return super().predict_step(batch, batch_idx)


def test_a_run_that_dies_keeps_the_results_of_its_finished_batches(tmp_path, tiny_config):
    cfg = _eager(tiny_config).replace(batch_size=2)
    folder = _write_images(tmp_path / "images", n=4)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="killed"):
        _predict(_DiesOnSecondBatch(cfg), folder, tmp_path / "out", cfg)
    assert not (tmp_path / "out" / "results.json").exists()
    kept = (tmp_path / "out" / "results.rank0.partial.jsonl").read_text().splitlines()
    assert kept and {json.loads(line)["image_id"] for line in kept} == {0, 1}


def test_prediction_writer_writes_results_and_overlays(tmp_path, tiny_config):
    """results.json holds every instance that `predict_step` returned, image by image
    (ids, labels, scores, masks), and each image gets its overlay."""
    cfg = _eager(tiny_config)
    folder = _write_images(tmp_path / "images", n=3)
    out = tmp_path / "out"
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[PredictionWriter(str(out))],
    )
    datamodule = SOLODataModule(cfg, predict_dir=str(folder))
    torch.manual_seed(0)
    predicted = predictions_by_image(trainer.predict(LitSOLO(cfg), datamodule=datamodule))
    assert sorted(predicted) == [0, 1, 2] and all(len(p["labels"]) for p in predicted.values())
    assert_results_match(json.loads((out / "results.json").read_text()), predicted)
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == ["photo_0.png.png", "photo_1.png.png", "photo_2.png.png"]
    assert Image.open(out / "overlays" / "photo_0.png.png").size == (120, 90)


def test_overlays_of_files_with_one_stem_do_not_overwrite_each_other():
    assert overlay_name("a.jpg", 0) != overlay_name("a.png", 1)
    assert overlay_name("train/a.jpg", 0) == "train__a.jpg.png"
    assert overlay_name(None, 7) == "000007.png"  # CIS 680 images have no file


def test_predicting_a_coco_set_writes_its_image_ids_and_file_names(tmp_path, tiny_config):
    """A COCO set's ids start at 1 and its files have names: both reach results.json."""
    cfg = _eager(tiny_config).replace(val_fraction=0.5)
    source = write_dataset(tmp_path / "cis", num_images=4, seed=3)
    image_dir, annotations = write_coco_dataset(CIS680Dataset(source, cfg), tmp_path / "coco")
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[PredictionWriter(str(tmp_path / "out"), overlays=False)],
    )
    datamodule = SOLODataModule(
        cfg, root=str(image_dir), format="coco", annotation_file=str(annotations)
    )
    torch.manual_seed(0)
    trainer.predict(LitSOLO(cfg), datamodule=datamodule)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    coco = json.loads(annotations.read_text())
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    # write_coco_dataset numbers the images 1, 2, ... in order: id = position + 1
    val_ids = {int(position) + 1 for position in datamodule.val_dataset.indices}
    assert results and {r["image_id"] for r in results} == val_ids
    assert all(r["file_name"] == names[r["image_id"]] for r in results)


def test_category_ids_of_a_coco_file_reach_the_checkpoint_and_the_results(tmp_path, tiny_config):
    """Non-contiguous ids (7, 42, 99): stored with the model, written back in results.json."""
    cfg = _eager(tiny_config)
    source = write_dataset(tmp_path / "cis", num_images=6, seed=3)
    image_dir, annotations = write_coco_dataset(CIS680Dataset(source, cfg), tmp_path / "coco")
    ids = {1: 7, 2: 42, 3: 99}
    coco = json.loads(annotations.read_text())
    for entry in coco["categories"]:
        entry["id"] = ids[entry["id"]]
    for entry in coco["annotations"]:
        entry["category_id"] = ids[entry["category_id"]]
    annotations.write_text(json.dumps(coco))

    def datamodule():
        return SOLODataModule(
            cfg, root=str(image_dir), format="coco", annotation_file=str(annotations)
        )

    torch.manual_seed(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
    )
    trainer.fit(LitSOLO(cfg), datamodule=datamodule())
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    stored = torch.load(tmp_path / "model.ckpt", map_location="cpu", weights_only=True)
    assert stored["hyper_parameters"]["config"]["category_ids"] == [7, 42, 99]

    model = LitSOLO.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert model.cfg.category_ids == (7, 42, 99)
    predictor = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[PredictionWriter(str(tmp_path / "out"), overlays=False)],
    )
    predicted = predictions_by_image(predictor.predict(model, datamodule=datamodule()))
    labels = {label for p in predicted.values() for label in p["labels"].tolist()}
    assert len(labels) > 1, "the mapping of one label alone would not show"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert_results_match(results, predicted, category_ids=[7, 42, 99])
