"""The built-in data set: determinism, the CIS 680 format, occlusion, sizes, atomic writes."""

from __future__ import annotations

import json
import threading

import h5py
import numpy as np
import pytest

from solo_lib.config import SOLOConfig
from solo_lib.data import synthetic
from solo_lib.data.cis680 import BBOXES_FILE, IMAGES_FILE, LABELS_FILE, MASKS_FILE
from solo_lib.data.synthetic import ensure_builtin_dataset, render_image, write_dataset


def read_all(root):
    with h5py.File(root / IMAGES_FILE) as fi, h5py.File(root / MASKS_FILE) as fm:
        images, masks = fi["data"][:], fm["data"][:]
    labels = np.load(root / LABELS_FILE, allow_pickle=True)
    boxes = np.load(root / BBOXES_FILE, allow_pickle=True)
    return images, masks, labels, boxes


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth") / "set", num_images=12, seed=3)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, small_set):
    again = read_all(write_dataset(tmp_path / "again", num_images=12, seed=3))
    first = read_all(small_set)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    for a, b in zip(first[2], again[2], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first[3], again[3], strict=True):
        np.testing.assert_array_equal(a, b)
    other = read_all(write_dataset(tmp_path / "other", num_images=12, seed=4))
    assert not np.array_equal(first[0], other[0])


def test_images_can_be_drawn_one_by_one(small_set):
    images, masks, labels, _ = read_all(small_set)
    image, m, lab, _ = render_image(3, 7)
    offset = sum(len(x) for x in labels[:7])
    np.testing.assert_array_equal(images[7], image)
    np.testing.assert_array_equal(masks[offset : offset + len(lab)], m)


def test_files_follow_the_cis680_format(small_set):
    with h5py.File(small_set / IMAGES_FILE) as fi, h5py.File(small_set / MASKS_FILE) as fm:
        img, msk = fi["data"], fm["data"]
        assert img.shape == (12, 3, 300, 400) and img.dtype == np.uint8
        assert img.compression == "gzip" and img.chunks == (1, 3, 300, 400)
        assert msk.ndim == 3 and msk.shape[1:] == (300, 400) and msk.dtype == np.uint8
        assert msk.compression == "gzip" and msk.chunks == (1, 300, 400)
        num_masks = msk.shape[0]
    images, masks, labels, boxes = read_all(small_set)
    assert labels.dtype == object and boxes.dtype == object and len(labels) == len(boxes) == 12
    assert sum(len(x) for x in labels) == num_masks
    assert set(np.unique(masks)) <= {0, 1}
    offset = 0
    for lab, box in zip(labels, boxes, strict=True):
        assert lab.dtype.kind == "i" and set(lab.tolist()) <= {1, 2, 3}
        assert 0 <= len(lab) <= synthetic.MAX_OBJECTS
        assert box.shape == (len(lab), 4) and box.dtype.kind == "f"
        for j in range(len(lab)):  # box = extent of the mask at the same offset
            m = masks[offset + j].astype(bool)
            ys, xs = np.nonzero(m)
            np.testing.assert_array_equal(box[j], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        offset += len(lab)
    meta = json.loads((small_set / synthetic.METADATA_FILE).read_text())
    assert meta["num_images"] == 12 and meta["seed"] == 3 and meta["num_masks"] == num_masks


def test_masks_are_visible_parts_and_never_overlap():
    for i in range(30):
        _, masks, labels, _ = render_image(0, i)
        assert masks.shape[0] == len(labels)
        if len(masks):
            assert masks.sum(axis=0).max() <= 1, f"image {i}: a pixel belongs to two masks"
            assert masks.reshape(len(masks), -1).sum(axis=1).min() >= synthetic.MIN_VISIBLE_AREA


def test_object_sizes_cover_every_scale_range_of_both_presets():
    sizes, labels = [], []
    for i in range(200):
        _, _, lab, box = render_image(11, i)
        sizes.append(np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])))
        labels.append(lab)
    sizes, labels = np.concatenate(sizes), np.concatenate(labels)
    for cfg in (SOLOConfig.paper(), SOLOConfig.cpu()):
        at_input = sizes * cfg.image_size[0] / synthetic.IMAGE_HEIGHT
        for lo, hi in cfg.scale_ranges:
            inside = int(((at_input >= lo) & (at_input <= hi)).sum())
            assert inside >= 10, f"{cfg.name}: only {inside} objects in scale range ({lo}, {hi})"
    counts = np.bincount(labels, minlength=4)[1:]
    assert counts.min() > 0.25 * counts.sum(), f"classes unbalanced: {counts}"


def test_colour_alone_does_not_tell_the_classes_apart():
    """Nearest-class-mean on an object's mean colour must stay near chance (1/3)."""
    colours, labels = [], []
    for i in range(120):
        image, masks, lab, _ = render_image(5, i)
        for m, label in zip(masks.astype(bool), lab, strict=True):
            colours.append(image[:, m].mean(axis=1) / 255.0)
            labels.append(label)
    colours, labels = np.array(colours), np.array(labels)
    half = len(labels) // 2
    centroids = np.stack([colours[:half][labels[:half] == c].mean(axis=0) for c in (1, 2, 3)])
    predicted = 1 + np.argmin(((colours[half:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == labels[half:]).mean() < 0.5


def test_ensure_builtin_dataset_generates_once_and_regenerates_on_mismatch(tmp_path):
    root = tmp_path / "builtin"
    assert ensure_builtin_dataset(root, num_images=3, seed=0) == root
    stamp = (root / IMAGES_FILE).stat().st_mtime_ns
    ensure_builtin_dataset(root, num_images=3, seed=0)
    assert (root / IMAGES_FILE).stat().st_mtime_ns == stamp
    ensure_builtin_dataset(root, num_images=4, seed=0)
    assert len(read_all(root)[0]) == 4
    assert json.loads((root / synthetic.METADATA_FILE).read_text())["num_images"] == 4


def test_generating_says_what_and_where_with_a_progress_bar_and_only_once(tmp_path, capsys):
    """The first minute of the main job printed nothing while the set was generated."""
    root = tmp_path / "builtin"
    ensure_builtin_dataset(root, num_images=3, seed=0)
    err = capsys.readouterr().err  # a status, beside Lightning's: not the notebooks' output
    assert f"generating the built-in 'objects' data set, 3 images, into {root}" in err
    assert "objects images: 100%" in err and "3/3" in err  # tqdm's bar
    ensure_builtin_dataset(root, num_images=3, seed=0)
    assert capsys.readouterr() == ("", "")  # found there: nothing to say


def test_ensure_builtin_dataset_never_replaces_foreign_files(tmp_path):
    root = tmp_path / "real"
    root.mkdir()
    (root / IMAGES_FILE).write_bytes(b"someone's data")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        ensure_builtin_dataset(root, num_images=2)
    assert (root / IMAGES_FILE).read_bytes() == b"someone's data"


def test_racing_callers_both_get_a_whole_data_set(tmp_path):
    root, errors = tmp_path / "race", []

    def call():
        try:
            ensure_builtin_dataset(root, num_images=3, seed=1)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    images, masks, labels, _ = read_all(root)
    assert len(images) == 3 and len(masks) == sum(len(x) for x in labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".race.lock", "race"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(seed, index):
        if index == 2:
            raise RuntimeError("disk on fire")
        return render_image(seed, index)

    monkeypatch.setattr(synthetic.cache, "render_image", broken)  # as write_dataset sees it
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_dataset(tmp_path / "out", num_images=4, seed=0)
    assert list(tmp_path.iterdir()) == []
