"""Bad input is named when a data set is built, not mid-epoch: category names against the
config, files without annotations, objects that cover no pixel, image sizes, duplicate ids."""

from __future__ import annotations

import json

import h5py
import pytest
from PIL import Image

from solo_lib.config import SOLOConfig
from solo_lib.data import (
    CIS680Dataset,
    CocoInstanceDataset,
    DataFormatError,
    SOLODataModule,
    write_dataset,
)
from solo_lib.data.cis680 import MASKS_FILE

H, W = 20, 30
#: Category ids 9 and 3: sorted, label 1 is "car" (id 3) and label 2 "dog" (id 9).
CATEGORIES = [{"id": 9, "name": "dog"}, {"id": 3, "name": "car"}]
CFG = SOLOConfig.cpu().replace(num_classes=2, class_names=("car", "dog"), num_workers=0)


def square(x: int, y: int) -> list[list[int]]:
    """A 6x4 px polygon with its top-left corner at (x, y)."""
    return [[x, y, x + 6, y, x + 6, y + 4, x, y + 4]]


def annotation(ann_id: int, image_id: int, category_id: int = 3, **extra) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "segmentation": square(2, 2),
        **extra,
    }


def coco_file(folder, images=None, annotations=None, categories=None):
    """A COCO file in `folder` (default: images 1 and 2 of W x H, one car on each) and a
    black PNG for every image entry at the entry's size; returns (folder, file)."""
    folder.mkdir(parents=True, exist_ok=True)
    if images is None:
        images = [{"id": k, "file_name": f"im{k}.png", "height": H, "width": W} for k in (1, 2)]
    if annotations is None:
        annotations = [annotation(1, 1), annotation(2, 2, category_id=9)]
    for info in images:
        if not (folder / info["file_name"]).exists():
            Image.new("RGB", (info["width"], info["height"])).save(folder / info["file_name"])
    payload = {
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES if categories is None else categories,
    }
    (folder / "instances.json").write_text(json.dumps(payload))
    return folder, folder / "instances.json"


# --- 1. class names are checked against the file, by category id ----------------------
def test_class_names_in_another_order_than_the_sorted_ids_are_refused(tmp_path):
    """Names were taken from the file and only counted: ("dog", "car") in the config
    labelled every car AP and overlay "dog", without an error."""
    image_dir, ann_file = coco_file(tmp_path)
    assert CocoInstanceDataset(image_dir, ann_file, CFG).class_names == ("car", "dog")
    swapped = CFG.replace(class_names=("dog", "car"))
    with pytest.raises(DataFormatError, match=r"instances\.json") as info:
        CocoInstanceDataset(image_dir, ann_file, swapped)
    assert "3: car, 9: dog" in str(info.value) and "['dog', 'car']" in str(info.value)


def test_a_validation_file_with_other_category_ids_is_refused(tmp_path):
    """Same names, other ids: predictions on the validation file would be written with
    the training file's ids. Only the names used to be compared."""
    train_dir, train_file = coco_file(tmp_path / "train")
    val_dir, val_file = coco_file(
        tmp_path / "val",
        annotations=[annotation(1, 1, category_id=4), annotation(2, 2, category_id=9)],
        categories=[{"id": 4, "name": "car"}, {"id": 9, "name": "dog"}],
    )
    data = SOLODataModule(
        CFG,
        format="coco",
        root=str(train_dir),
        annotation_file=str(train_file),
        val_root=str(val_dir),
        val_annotation_file=str(val_file),
    )
    with pytest.raises(DataFormatError, match=r"val/instances\.json.*\[4, 9\].*\[3, 9\]"):
        data.setup("fit")


# --- 2. a training set without annotations ---------------------------------------------
def test_a_file_without_annotations_is_refused_for_training_and_predicts(tmp_path):
    """It used to train on nothing: mask AP nan and a "best" checkpoint at -inf."""
    image_dir, ann_file = coco_file(tmp_path, annotations=[])
    with pytest.raises(DataFormatError, match=r"instances\.json.*no annotations"):
        CocoInstanceDataset(image_dir, ann_file, CFG, train=True)
    assert len(CocoInstanceDataset(image_dir, ann_file, CFG)) == 2  # evaluation: built
    kwargs = {"format": "coco", "root": str(image_dir), "annotation_file": str(ann_file)}
    with pytest.raises(DataFormatError, match=r"instances\.json.*no annotations"):
        SOLODataModule(CFG, **kwargs).setup("fit")
    predicting = SOLODataModule(CFG.replace(val_fraction=0.5), **kwargs)
    predicting.setup("predict")  # images without annotations predict
    targets = [t for _, batch in predicting.predict_dataloader() for t in batch]
    assert len(targets) == 1 and predicting.train_dataset is None


def test_a_training_split_whose_images_have_no_annotations_is_refused(tmp_path):
    """Image 2 holds only a crowd region, which training skips: alone, it trains on nothing."""
    image_dir, ann_file = coco_file(
        tmp_path, annotations=[annotation(1, 1), annotation(2, 2, iscrowd=1)]
    )
    assert len(CocoInstanceDataset(image_dir, ann_file, CFG, train=True, indices=[0])) == 1
    with pytest.raises(DataFormatError, match=r"instances\.json.*no annotations"):
        CocoInstanceDataset(image_dir, ann_file, CFG, train=True, indices=[1])


# --- 3. objects that cover no pixel --------------------------------------------------
def test_an_annotation_outside_its_image_is_left_out_with_one_warning(tmp_path):
    """A polygon entirely outside its image used to become a 0-pixel object with box
    [0, 0, 0, 0], kept: it can never be found and lowers recall."""
    outside = annotation(7, 2, segmentation=square(100, 50))
    image_dir, ann_file = coco_file(
        tmp_path, annotations=[annotation(1, 1), annotation(2, 2), outside]
    )
    with pytest.warns(UserWarning, match=r"instances\.json") as record:
        dataset = CocoInstanceDataset(image_dir, ann_file, CFG)
    (message,) = [str(w.message) for w in record if "instances.json" in str(w.message)]
    assert "1 of 3" in message and "annotation id 7 (image id 2, 30x20)" in message
    _, target = dataset.load_raw(1)
    assert target["labels"].tolist() == [1] and target["masks"].sum() == 24


def test_an_all_zero_cis680_mask_is_left_out_with_one_warning(tmp_path):
    root = write_dataset(tmp_path / "cis", num_images=3, seed=0)
    first = CIS680Dataset(root, SOLOConfig.cpu())
    n_first = int(first.offsets[1])
    assert n_first >= 1
    with h5py.File(root / MASKS_FILE, "r+") as f:
        f["data"][0] = 0  # image 0's first object
    with pytest.warns(UserWarning, match=MASKS_FILE) as record:
        dataset = CIS680Dataset(root, SOLOConfig.cpu())
    (message,) = [str(w.message) for w in record if MASKS_FILE in str(w.message)]
    assert f"1 of {int(first.offsets[-1])}" in message and "mask 0 (image 0, 400x300)" in message
    _, target = dataset.load_raw(0)
    _, before = first.load_raw(0)
    assert len(target["labels"]) == len(target["masks"]) == len(target["boxes"]) == n_first - 1
    assert target["labels"].tolist() == before["labels"][1:].tolist()
    assert target["masks"].flatten(1).any(1).all()


# --- 4. image sizes --------------------------------------------------------------------
def test_an_image_of_another_size_than_its_entry_is_named_at_construction(tmp_path):
    """It used to fail mid-epoch, when the image was first read."""
    image_dir, ann_file = coco_file(tmp_path)
    Image.new("RGB", (W + 5, H)).save(image_dir / "im2.png")
    with pytest.raises(DataFormatError, match=r"im2\.png: image is 20x35; expected 20x30") as info:
        CocoInstanceDataset(image_dir, ann_file, CFG)
    assert "image id 2" in str(info.value) and "instances.json" in str(info.value)


def test_image_sizes_are_compared_after_the_exif_orientation(tmp_path):
    """A camera photo stored 30 wide, 20 high with orientation 6 is shown, and annotated,
    20 wide and 30 high."""
    turned = Image.new("RGB", (W, H))
    exif = turned.getexif()
    exif[0x0112] = 6
    tmp_path.mkdir(exist_ok=True)
    turned.save(tmp_path / "photo.jpg", exif=exif)
    upright = [{"id": 1, "file_name": "photo.jpg", "height": W, "width": H}]
    image_dir, ann_file = coco_file(tmp_path, images=upright, annotations=[annotation(1, 1)])
    image, _ = CocoInstanceDataset(image_dir, ann_file, CFG).load_raw(0)
    assert image.shape == (3, W, H)
    stored = [{"id": 1, "file_name": "photo.jpg", "height": H, "width": W}]
    image_dir, ann_file = coco_file(tmp_path, images=stored, annotations=[annotation(1, 1)])
    with pytest.raises(DataFormatError, match=r"photo\.jpg: image is 30x20; expected 20x30"):
        CocoInstanceDataset(image_dir, ann_file, CFG)


# --- 5. duplicate ids ------------------------------------------------------------------
DUPLICATES = {
    "images": (
        {"images": [{"id": 1, "file_name": f"im{k}.png", "height": H, "width": W} for k in (1, 2)]},
        ("duplicate image id 1", "im1.png", "im2.png"),
    ),
    "annotations": (
        {"annotations": [annotation(5, 1), annotation(5, 2)]},
        ("duplicate annotation id 5", "'image_id': 1", "'image_id': 2"),
    ),
    "categories": (
        {"categories": [{"id": 3, "name": "car"}, {"id": 3, "name": "dog"}]},
        ("duplicate category id 3", "'car'", "'dog'"),
    ),
}


@pytest.mark.parametrize("key", sorted(DUPLICATES))
def test_duplicate_ids_are_named_as_duplicates(tmp_path, key):
    """Duplicate image ids used to be reported as an annotation whose image_id is not in
    'images'; duplicate annotation ids passed; duplicate category ids were miscounted."""
    edit, named = DUPLICATES[key]
    image_dir, ann_file = coco_file(tmp_path, **edit)
    with pytest.raises(DataFormatError, match=r"instances\.json") as info:
        CocoInstanceDataset(image_dir, ann_file, CFG)
    for detail in named:
        assert detail in str(info.value)
