"""COCO reading (polygons, RLE, crowd, category mapping) and the COCO export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from solo_lib.config import SOLOConfig
from solo_lib.data import (
    CIS680Dataset,
    CocoInstanceDataset,
    DataFormatError,
    write_coco_dataset,
    write_dataset,
)


@pytest.fixture(scope="module")
def cis_set(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("coco") / "cis", num_images=8, seed=2)
    return CIS680Dataset(root, SOLOConfig.cpu())


def test_rle_export_round_trips_exactly(cis_set, tmp_path):
    image_dir, ann_file = write_coco_dataset(cis_set, tmp_path / "coco", segmentation="rle")
    coco = CocoInstanceDataset(image_dir, ann_file, SOLOConfig.cpu())
    assert len(coco) == len(cis_set) and coco.class_names == ("vehicle", "person", "animal")
    for i in range(len(coco)):
        (img_a, tgt_a), (img_b, tgt_b) = cis_set.load_raw(i), coco.load_raw(i)
        torch.testing.assert_close(img_a, img_b)
        torch.testing.assert_close(tgt_a["masks"], tgt_b["masks"])
        torch.testing.assert_close(tgt_a["labels"], tgt_b["labels"])
        torch.testing.assert_close(tgt_a["boxes"], tgt_b["boxes"])


def test_polygon_export_decodes_close_to_the_masks(cis_set, tmp_path):
    image_dir, ann_file = write_coco_dataset(
        cis_set, tmp_path / "poly", indices=[1, 5], segmentation="polygon"
    )
    anns = json.loads(ann_file.read_text())["annotations"]
    assert anns and all(isinstance(a["segmentation"], list) for a in anns)
    coco = CocoInstanceDataset(image_dir, ann_file, SOLOConfig.cpu())
    for i, source in enumerate((1, 5)):
        ref, got = cis_set.load_raw(source)[1]["masks"].bool(), coco.load_raw(i)[1]["masks"].bool()
        assert len(ref) == len(got)
        for a, b in zip(ref, got, strict=True):
            if a.sum() >= 100:
                iou = (a & b).sum() / (a | b).sum()
                assert iou > 0.85


#: The handmade file's categories in sorted id order (3, 7, 12).
HANDMADE_CFG = SOLOConfig.cpu().replace(class_names=("car", "man", "dog"))


@pytest.fixture
def handmade(tmp_path):
    """Three images; categories with unsorted, gappy ids; polygon, RLE (both kinds), crowd."""
    h, w = 20, 30
    for k in range(3):
        Image.fromarray(np.full((h, w, 3), 40 * k, np.uint8)).save(tmp_path / f"im{k}.png")
    square = np.zeros((h, w), np.uint8)
    square[2:8, 3:13] = 1
    compressed = mask_utils.encode(np.asfortranarray(square))
    counts, value, run = [], 0, 0  # uncompressed RLE: run lengths in column-major order
    for pixel in square.flatten(order="F"):
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    payload = {
        "images": [
            {"id": 10 + k, "file_name": f"im{k}.png", "height": h, "width": w} for k in range(3)
        ],
        "categories": [
            {"id": 12, "name": "dog"},
            {"id": 3, "name": "car"},
            {"id": 7, "name": "man"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 12,
                "iscrowd": 0,
                "bbox": [5, 4, 10, 6],
                "segmentation": [[5, 4, 15, 4, 15, 10, 5, 10]],
            },
            {
                "id": 2,
                "image_id": 10,
                "category_id": 3,
                "iscrowd": 0,
                "bbox": [3, 2, 10, 6],
                "segmentation": {"size": [h, w], "counts": compressed["counts"].decode()},
            },
            {
                "id": 3,
                "image_id": 11,
                "category_id": 7,
                "iscrowd": 0,
                "bbox": [3, 2, 10, 6],
                "segmentation": {"size": [h, w], "counts": counts},
            },
            {
                "id": 4,
                "image_id": 11,
                "category_id": 3,
                "iscrowd": 1,
                "bbox": [0, 0, 30, 20],
                "segmentation": {"size": [h, w], "counts": [0, h * w]},
            },
        ],
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(payload))
    return tmp_path, ann_file, square


def test_polygons_and_both_rle_kinds_decode_and_ids_map_in_sorted_order(handmade):
    image_dir, ann_file, square = handmade
    ds = CocoInstanceDataset(image_dir, ann_file, HANDMADE_CFG)
    assert ds.class_names == ("car", "man", "dog")
    assert ds.cat_to_label == {3: 1, 7: 2, 12: 3}
    img, target = ds.load_raw(0)
    assert img.shape == (3, 20, 30) and img.dtype == torch.uint8
    assert target["labels"].tolist() == [3, 1]
    polygon = target["masks"][0]
    assert polygon.sum() == 60 and polygon[4:10, 5:15].all()
    torch.testing.assert_close(target["masks"][1], torch.from_numpy(square))
    torch.testing.assert_close(target["boxes"], torch.tensor([[5.0, 4, 15, 10], [3, 2, 13, 8]]))
    _, target = ds.load_raw(1)  # uncompressed RLE, and the crowd region with its flag
    assert target["labels"].tolist() == [2, 1] and target["iscrowd"].tolist() == [0, 1]
    torch.testing.assert_close(target["masks"][0], torch.from_numpy(square))
    assert target["masks"][1].all()


def test_crowd_regions_are_not_trained_on_but_kept_for_evaluation(handmade):
    image_dir, ann_file, square = handmade
    cfg = HANDMADE_CFG
    _, train_target = CocoInstanceDataset(image_dir, ann_file, cfg, train=True, indices=[1])[0]
    assert train_target["labels"].tolist() == [2] and "original" not in train_target
    _, val_target = CocoInstanceDataset(image_dir, ann_file, cfg, indices=[1])[0]
    assert val_target["labels"].tolist() == [2]
    original = val_target["original"]  # as stored: original size, crowd included, no resampling
    assert original["labels"].tolist() == [2, 1] and original["iscrowd"].tolist() == [0, 1]
    assert original["masks"].dtype == torch.bool and original["masks"].shape == (2, 20, 30)
    assert torch.equal(original["masks"][0], torch.from_numpy(square).bool())


def test_item_contract_and_image_without_annotations(handmade):
    image_dir, ann_file, _ = handmade
    cfg = HANDMADE_CFG
    ds = CocoInstanceDataset(image_dir, ann_file, cfg, train=True)
    image, target = ds[2]
    assert image.shape == (3, *cfg.image_size) and image.dtype == torch.float32
    assert target["masks"].shape == (0, *cfg.image_size) and target["labels"].dtype == torch.int64
    assert target["geometry"].orig_size == (20, 30) and target["image_id"].item() == 2
    _, target = CocoInstanceDataset(image_dir, ann_file, cfg, indices=[0])[0]
    assert target["masks"].shape == (2, *cfg.image_size) and target["boxes"].shape == (2, 4)


def test_missing_image_file_is_named_at_construction(handmade):
    image_dir, ann_file, _ = handmade
    (image_dir / "im1.png").unlink()
    with pytest.raises(DataFormatError, match=r"im1\.png.*not found.*image id 11"):
        CocoInstanceDataset(image_dir, ann_file, HANDMADE_CFG)


def test_category_count_must_match_the_config(handmade):
    image_dir, ann_file, _ = handmade
    cfg = HANDMADE_CFG.replace(num_classes=2, class_names=("a", "b"))
    with pytest.raises(DataFormatError, match="instances.json.*3 entries.*num_classes = 2"):
        CocoInstanceDataset(image_dir, ann_file, cfg)


def test_unknown_category_and_bad_json_are_named(handmade):
    image_dir, ann_file, _ = handmade
    payload = json.loads(ann_file.read_text())
    payload["annotations"][0]["category_id"] = 99
    ann_file.write_text(json.dumps(payload))
    with pytest.raises(DataFormatError, match="annotation id 1 has category_id 99"):
        CocoInstanceDataset(image_dir, ann_file, HANDMADE_CFG)
    ann_file.write_text("{not json")
    with pytest.raises(DataFormatError, match="instances.json"):
        CocoInstanceDataset(image_dir, ann_file, HANDMADE_CFG)


def _first_annotation(key, value=None):
    """An edit of the annotation file: annotation 1's `key` set to `value` (None: deleted)."""

    def edit(payload):
        if value is None:
            del payload["annotations"][0][key]
        else:
            payload["annotations"][0][key] = value
        return payload

    return edit


def _second_rle_size(payload):
    payload["annotations"][1]["segmentation"]["size"] = [10, 30]
    return payload


def _no_height(payload):
    del payload["images"][0]["height"]
    return payload


BAD_ANNOTATIONS = {
    "empty polygon list": (_first_annotation("segmentation", []), "annotation id 1: segmentation"),
    "empty polygon": (_first_annotation("segmentation", [[]]), "annotation id 1: .*polygons"),
    "two-point polygon": (_first_annotation("segmentation", [[1, 1, 5, 5]]), "at least 3 points"),
    "missing segmentation": (
        _first_annotation("segmentation"),
        "annotation id 1: segmentation None is neither polygons nor RLE",
    ),
    "RLE of another size": (
        _second_rle_size,
        r"annotation id 2: RLE size \[10, 30\]; expected \[20, 30\]",
    ),
    "unknown image": (_first_annotation("image_id", 99), "annotation id 1 has image_id 99"),
    "image without height": (_no_height, "lacks 'id', 'file_name', 'height' or 'width'"),
    "a JSON list": (lambda payload: [], "holds a JSON list; expected a JSON object"),
    "an empty object": (lambda payload: {}, "no list 'images'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotations_are_refused_at_construction(handmade, case):
    """Each of these used to pass construction and fail mid-epoch in pycocotools
    (or with a bare AssertionError / KeyError): now a DataFormatError names file and id."""
    image_dir, ann_file, _ = handmade
    edit, detail = BAD_ANNOTATIONS[case]
    ann_file.write_text(json.dumps(edit(json.loads(ann_file.read_text()))))
    with pytest.raises(DataFormatError, match=detail) as info:
        CocoInstanceDataset(image_dir, ann_file, HANDMADE_CFG)
    assert "instances.json" in str(info.value)
