"""The CIS 680 reader: item contract, raw loading, dtypes, worker safety, bad input."""

from __future__ import annotations

import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from solo_lib.config import SOLOConfig
from solo_lib.data import (
    CIS680Dataset,
    DataFormatError,
    ImageGeometry,
    collate,
    summary,
    write_dataset,
)
from solo_lib.data.cis680 import BBOXES_FILE, IMAGES_FILE, LABELS_FILE, MASKS_FILE


def write_cis680(root, images, masks_per_image, labels, boxes):
    """Write the four files from per-image lists (the test's own minimal writer)."""
    root.mkdir(parents=True, exist_ok=True)
    h, w = images.shape[-2:]
    with h5py.File(root / IMAGES_FILE, "w") as f:
        f.create_dataset("data", data=images, compression="gzip")
    with h5py.File(root / MASKS_FILE, "w") as f:
        flat = [m for ms in masks_per_image for m in ms]
        f.create_dataset("data", data=np.array(flat, dtype=np.uint8).reshape(-1, h, w))
    for name, entries in ((LABELS_FILE, labels), (BBOXES_FILE, boxes)):
        arr = np.empty(len(entries), dtype=object)
        arr[:] = [np.asarray(e) for e in entries]
        np.save(root / name, arr, allow_pickle=True)
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("cis") / "set", num_images=10, seed=1)


@pytest.fixture
def copy_dir(tmp_path, data_dir):
    dst = tmp_path / "copy"
    shutil.copytree(data_dir, dst)
    return dst


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_item_contract(data_dir, preset):
    cfg = SOLOConfig.preset(preset)
    ds = CIS680Dataset(data_dir, cfg)
    big_h, big_w = cfg.image_size
    for i in (0, 3):
        image, target = ds[i]
        n = len(target["labels"])
        assert image.dtype == torch.float32 and image.shape == (3, big_h, big_w)
        assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (n, big_h, big_w)
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
        assert target["image_id"].dtype == torch.int64 and target["image_id"].item() == i
        geometry = target["geometry"]
        assert geometry == ImageGeometry.fit((300, 400), cfg.image_size)
        x1, y1, x2, y2 = geometry.content_box
        assert set(target["masks"].unique().tolist()) <= {0, 1}
        # the padding is exactly 0, the content is not
        outside = torch.ones(big_h, big_w, dtype=torch.bool)
        outside[y1:y2, x1:x2] = False
        assert image[:, outside].abs().max() == 0 and image[:, y1:y2, x1:x2].abs().sum() > 0
        assert target["masks"][:, outside].sum() == 0
        # normalisation: undoing it recovers the raw image's mean colour
        raw, _ = ds.load_raw(i)
        std = torch.tensor(cfg.pixel_std).view(3, 1, 1)
        mean = torch.tensor(cfg.pixel_mean).view(3, 1, 1)
        restored = (image[:, y1:y2, x1:x2] * std + mean).mean(dim=(1, 2))
        torch.testing.assert_close(restored, raw.float().mean(dim=(1, 2)) / 255, atol=0.01, rtol=0)


def test_load_raw_reads_masks_at_the_label_offsets(data_dir):
    ds = CIS680Dataset(data_dir, SOLOConfig.cpu())
    labels = np.load(data_dir / LABELS_FILE, allow_pickle=True)
    boxes = np.load(data_dir / BBOXES_FILE, allow_pickle=True)
    with h5py.File(data_dir / IMAGES_FILE) as fi, h5py.File(data_dir / MASKS_FILE) as fm:
        for i in (0, 4, 9):
            start = sum(len(x) for x in labels[:i])
            image, target = ds.load_raw(i)
            assert image.dtype == torch.uint8 and image.shape == (3, 300, 400)
            np.testing.assert_array_equal(image.numpy(), fi["data"][i])
            np.testing.assert_array_equal(
                target["masks"].numpy(), fm["data"][start : start + len(labels[i])]
            )
            np.testing.assert_array_equal(target["labels"].numpy(), labels[i])
            np.testing.assert_allclose(target["boxes"].numpy(), boxes[i], atol=1e-4)
    assert ds.offsets[-1] == sum(len(x) for x in labels) and len(ds.offsets) == 11


def test_other_integer_image_dtypes_are_accepted(copy_dir, data_dir):
    with h5py.File(copy_dir / IMAGES_FILE, "r+") as f:
        data = f["data"][:].astype(np.uint32)
        del f["data"]
        f.create_dataset("data", data=data)
    a, b = CIS680Dataset(data_dir, SOLOConfig.cpu()), CIS680Dataset(copy_dir, SOLOConfig.cpu())
    torch.testing.assert_close(a[2][0], b[2][0])


def test_subset_keeps_file_indices_as_image_ids(data_dir):
    ds = CIS680Dataset(data_dir, SOLOConfig.cpu(), indices=[7, 2])
    assert len(ds) == 2 and ds[0][1]["image_id"].item() == 7 and ds[-1][1]["image_id"].item() == 2
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(IndexError):
        CIS680Dataset(data_dir, SOLOConfig.cpu(), indices=[10])


def test_an_image_without_objects_is_a_valid_item(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 30, 40), dtype=np.uint8)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 10:30] = 1
    root = write_cis680(
        tmp_path / "d", images, [[mask], []], [[2], []], [[[10, 5, 30, 15]], np.zeros((0, 4))]
    )
    cfg = SOLOConfig.cpu()
    image, target = CIS680Dataset(root, cfg)[1]
    assert image.shape == (3, *cfg.image_size)
    assert target["labels"].shape == (0,) and target["masks"].shape == (0, *cfg.image_size)
    assert target["boxes"].shape == (0, 4)
    images_b, targets = collate([CIS680Dataset(root, cfg)[i] for i in range(2)])
    assert images_b.shape == (2, 3, *cfg.image_size) and [len(t["labels"]) for t in targets] == [
        1,
        0,
    ]


def test_worker_processes_return_the_same_items(data_dir):
    ds = CIS680Dataset(data_dir, SOLOConfig.cpu())
    ds[0]  # opens the h5 files in this process before the workers start
    pickle.loads(pickle.dumps(ds))  # open handles are never pickled
    batches = [
        list(DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate))
        for workers in (0, 2)
    ]
    for (img_a, tgt_a), (img_b, tgt_b) in zip(*batches, strict=True):
        torch.testing.assert_close(img_a, img_b)
        for ta, tb in zip(tgt_a, tgt_b, strict=True):
            for key in ta:
                torch.testing.assert_close(ta[key], tb[key])


def test_summary_counts(data_dir):
    info = summary(data_dir)
    labels = np.load(data_dir / LABELS_FILE, allow_pickle=True)
    flat = np.concatenate(labels)
    assert info["num_images"] == 10 and info["num_masks"] == len(flat)
    assert info["per_class"] == {
        n: int((flat == c).sum()) for c, n in enumerate(("vehicle", "person", "animal"), 1)
    }
    assert info["image_size"] == (300, 400)


# ------------------------------------------------------------------------ bad input
def _rewrite_npy(path, edit):
    arr = np.load(path, allow_pickle=True)
    edit(arr)
    np.save(path, arr, allow_pickle=True)


def _rewrite_h5(path, data):
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)


def _drop_last_mask(d):
    with h5py.File(d / MASKS_FILE) as f:
        data = f["data"][:-1]
    _rewrite_h5(d / MASKS_FILE, data)


def _channels_last(d):
    with h5py.File(d / IMAGES_FILE) as f:
        data = f["data"][:].transpose(0, 2, 3, 1)
    _rewrite_h5(d / IMAGES_FILE, data)


def _truncate(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 3)


def _set_label(arr):
    arr[4] = arr[4].copy()
    arr[4][-1] = 4


def _box_outside(arr):
    arr[6] = arr[6].copy()
    arr[6][0, 2] = 402.5


def _set_box(index, value):
    def edit(arr):
        arr[6] = arr[6].copy()
        arr[6][0, index] = value

    return edit


def _float_masks(d, soften):
    """The masks rewritten as float32 with `soften` applied to mask 3 (of image 0 or 1)."""
    with h5py.File(d / MASKS_FILE) as f:
        data = f["data"][:].astype(np.float32)
    data[3] = soften(data[3])
    _rewrite_h5(d / MASKS_FILE, data)


class _Payload:
    """A pickle that runs code when loaded: it would create the file `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_payload(d):
    arr = np.empty(10, dtype=object)
    arr[:] = [_Payload(d / "pwned")] * 10
    np.save(d / LABELS_FILE, arr, allow_pickle=True)


BAD_CASES = {
    "missing images": (lambda d: (d / IMAGES_FILE).unlink(), IMAGES_FILE, "not found"),
    "missing masks": (lambda d: (d / MASKS_FILE).unlink(), MASKS_FILE, "not found"),
    "missing labels": (lambda d: (d / LABELS_FILE).unlink(), LABELS_FILE, "not found"),
    "missing boxes": (lambda d: (d / BBOXES_FILE).unlink(), BBOXES_FILE, "not found"),
    "truncated images": (lambda d: _truncate(d / IMAGES_FILE), IMAGES_FILE, "corrupt"),
    "truncated masks": (lambda d: _truncate(d / MASKS_FILE), MASKS_FILE, "corrupt"),
    "corrupt labels": (lambda d: _truncate(d / LABELS_FILE), LABELS_FILE, "npy"),
    "channels last": (_channels_last, IMAGES_FILE, r"\(N, 3, H, W\)"),
    "float images": (
        lambda d: _rewrite_h5(d / IMAGES_FILE, np.zeros((10, 3, 300, 400), np.float32)),
        IMAGES_FILE,
        "integer dtype",
    ),
    "wrong key": (
        lambda d: (d / MASKS_FILE).unlink() or h5py.File(d / MASKS_FILE, "w").close(),
        MASKS_FILE,
        "key 'data' missing",
    ),
    "mask size": (
        lambda d: _rewrite_h5(d / MASKS_FILE, np.zeros((5, 300, 401), np.uint8)),
        MASKS_FILE,
        "300, 400",
    ),
    "mask count": (_drop_last_mask, MASKS_FILE, "sum of the label counts"),
    "label range": (lambda d: _rewrite_npy(d / LABELS_FILE, _set_label), LABELS_FILE, "entry 4"),
    "box outside": (
        lambda d: _rewrite_npy(d / BBOXES_FILE, _box_outside),
        BBOXES_FILE,
        "entry 6, box 0",
    ),
    "label count": (
        lambda d: np.save(
            d / LABELS_FILE, np.load(d / LABELS_FILE, allow_pickle=True)[:9], allow_pickle=True
        ),
        LABELS_FILE,
        "one per image",
    ),
    "NaN box": (
        lambda d: _rewrite_npy(d / BBOXES_FILE, _set_box(3, float("nan"))),
        BBOXES_FILE,
        "entry 6, box 0 = .*nan.* not finite",
    ),
    "zero-width box": (
        lambda d: _rewrite_npy(d / BBOXES_FILE, lambda a: _set_box(2, a[6][0, 0])(a)),
        BBOXES_FILE,
        "entry 6, box 0 .* is empty",
    ),
    "soft float masks": (
        lambda d: _float_masks(d, lambda m: m * 0.4),
        MASKS_FILE,
        r"mask 3 \(image \d\) holds values \[0.0, 0.4",
    ),
    "NaN float masks": (
        lambda d: _float_masks(d, lambda m: np.where(m > 0, np.nan, 0)),
        MASKS_FILE,
        "mask 3 .* expected binary masks of 0 and 1",
    ),
    "pickle payload": (_pickled_payload, LABELS_FILE, "refused to unpickle"),
    "box shape": (
        lambda d: _rewrite_npy(d / BBOXES_FILE, lambda a: a.__setitem__(2, a[2][:, :3])),
        BBOXES_FILE,
        "entry 2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises_a_clear_error(copy_dir, case):
    damage, file_name, detail = BAD_CASES[case]
    damage(copy_dir)
    with pytest.raises(DataFormatError, match=detail) as info:
        CIS680Dataset(copy_dir, SOLOConfig.cpu())
    assert file_name in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not (copy_dir / "pwned").exists()  # no pickled code ran


def test_float_masks_of_zeros_and_ones_are_accepted(copy_dir, data_dir):
    _float_masks(copy_dir, lambda m: m)
    _, ours = CIS680Dataset(copy_dir, SOLOConfig.cpu()).load_raw(0)
    _, stored = CIS680Dataset(data_dir, SOLOConfig.cpu()).load_raw(0)
    assert torch.equal(ours["masks"], stored["masks"])
