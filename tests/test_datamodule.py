"""The data module: seeded disjoint split, batching, built-in default, COCO format."""

from __future__ import annotations

import pytest
import torch

from solo_lib.config import SOLOConfig
from solo_lib.data import (
    CIS680Dataset,
    SOLODataModule,
    split_indices,
    write_coco_dataset,
    write_dataset,
)
from solo_lib.data import datamodule as datamodule_module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("dm") / "set", num_images=15, seed=4)


def small_cfg(**changes):
    settings = {"batch_size": 4, "num_workers": 0, "val_fraction": 0.2, **changes}
    return SOLOConfig.cpu().replace(**settings)


def image_ids(loader):
    return [t["image_id"].item() for _, targets in loader for t in targets]


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(50, 0.2, seed=0)
    assert len(val) == 10 and sorted(train + val) == list(range(50)) and not set(train) & set(val)
    assert split_indices(50, 0.2, seed=0) == (train, val)
    assert split_indices(50, 0.2, seed=1) != (train, val)
    assert split_indices(3, 0.01, seed=0)[1] != [] and split_indices(2, 0.9, seed=0)[0] != []


def test_loaders_cover_the_split_and_shuffle_reproducibly(data_dir):
    dm = SOLODataModule(small_cfg(), root=str(data_dir))
    dm.setup("fit")
    train_ids, val_ids = image_ids(dm.train_dataloader()), image_ids(dm.val_dataloader())
    assert len(val_ids) == 3 and len(train_ids) == 12
    assert sorted(train_ids + val_ids) == list(range(15)) and not set(train_ids) & set(val_ids)
    assert image_ids(dm.val_dataloader()) == sorted(val_ids)  # validation is not shuffled
    assert train_ids != sorted(train_ids)  # training is
    again = SOLODataModule(small_cfg(), root=str(data_dir))
    assert image_ids(again.train_dataloader()) == train_ids  # same seed, same order
    other = SOLODataModule(small_cfg(seed=1), root=str(data_dir))
    other.setup()
    assert image_ids(other.val_dataloader()) != sorted(val_ids)
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 256, 352) and len(targets) == 4
    assert dm.class_names == ("vehicle", "person", "animal")


def test_workers_are_persistent_and_max_images_limits(data_dir):
    dm = SOLODataModule(small_cfg(num_workers=1), root=str(data_dir), max_images=5)
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1
    assert len(dm.train_dataset) + len(dm.val_dataset) == 5
    assert isinstance(dm.train_dataset, CIS680Dataset)


def test_default_root_is_the_builtin_data_set(data_dir, monkeypatch):
    calls = []

    def fake_builtin(mode):
        calls.append(mode)
        return data_dir

    monkeypatch.setattr(datamodule_module, "ensure_builtin_dataset", fake_builtin)
    dm = SOLODataModule(small_cfg())
    dm.prepare_data()
    dm.setup()
    assert calls and set(calls) == {"objects"} and len(dm.train_dataset) == 12


def test_coco_format(data_dir, tmp_path):
    image_dir, ann_file = write_coco_dataset(
        CIS680Dataset(data_dir, SOLOConfig.cpu()), tmp_path / "coco"
    )
    dm = SOLODataModule(
        small_cfg(), root=str(image_dir), format="coco", annotation_file=str(ann_file)
    )
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape[1:] == (3, 256, 352) and targets[0]["masks"].dtype == torch.uint8
    with pytest.raises(ValueError, match="annotation_file"):
        SOLODataModule(small_cfg(), root=str(image_dir), format="coco")
    with pytest.raises(ValueError, match="format"):
        SOLODataModule(small_cfg(), format="voc")


def test_predicting_on_a_folder_opens_no_data_set(data_dir, tmp_path):
    """A one-class model predicts on a folder although the default data set has 3 classes
    (it used to fail: "labels [2, 3]; expected values in 1..1")."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 30)).save(folder / "a.png")
    cfg = small_cfg(num_classes=1, class_names=("cell",))
    dm = SOLODataModule(cfg, root=str(data_dir), predict_dir=str(folder))
    dm.setup("predict")
    assert dm.train_dataset is None
    assert [meta["file_name"] for _, metas in dm.predict_dataloader() for meta in metas] == [
        "a.png"
    ]


def test_a_separate_coco_validation_set_replaces_the_random_split(data_dir, tmp_path):
    source = CIS680Dataset(data_dir, SOLOConfig.cpu())
    train_dir, train_ann = write_coco_dataset(source, tmp_path / "train", indices=range(10))
    val_dir, val_ann = write_coco_dataset(source, tmp_path / "val", indices=range(10, 15))
    dm = SOLODataModule(
        small_cfg(val_fraction=0.5),  # not used: the validation set is given
        root=str(train_dir),
        format="coco",
        annotation_file=str(train_ann),
        val_root=str(val_dir),
        val_annotation_file=str(val_ann),
    )
    dm.setup()
    assert len(dm.train_dataset) == 10 and len(dm.val_dataset) == 5
    _, val_target = dm.val_dataset.load_raw(0)
    _, source_target = source.load_raw(10)  # the val folder's first image is image 10
    assert torch.equal(val_target["masks"], source_target["masks"])
    with pytest.raises(ValueError, match="val_root .* and val_annotation_file"):
        SOLODataModule(
            small_cfg(),
            root=str(train_dir),
            format="coco",
            annotation_file=str(train_ann),
            val_root=str(val_dir),
        )


def test_the_dense_builtin_set_needs_its_one_class_and_then_loads(tmp_path, monkeypatch):
    """builtin="dense": a 3-class config is refused when the set is opened, naming the
    fix; a 1-class "cell" config reads the dense set (here 4 images written for the test)."""
    with pytest.raises(ValueError, match=r"classes \['cell'\].*num_classes 1"):
        SOLODataModule(small_cfg(), builtin="dense").setup("fit")

    dense = write_dataset(tmp_path / "dense", num_images=4, seed=0, mode="dense")
    asked = []
    monkeypatch.setattr(
        datamodule_module, "ensure_builtin_dataset", lambda mode: asked.append(mode) or dense
    )
    cfg = small_cfg().replace(num_classes=1, class_names=("cell",), val_fraction=0.5)
    data = SOLODataModule(cfg, builtin="dense")
    data.setup("fit")
    _, target = data.val_dataset[0]
    assert set(asked) == {"dense"} and len(data.train_dataset) == 2
    assert len(target["labels"]) >= 20 and set(target["labels"].tolist()) == {1}
    with pytest.raises(ValueError, match="builtin must be one of"):
        SOLODataModule(cfg, builtin="cells")
