"""The ceiling AP of a configuration: targets posing as a perfect network's output."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from solo_lib.analysis import CERTAIN, ceiling, dense_parts, error_sources, perfect_output
from solo_lib.config import SOLOConfig
from solo_lib.data.coco import CocoInstanceDataset, write_coco_dataset
from solo_lib.data.datamodule import collate
from solo_lib.model.solo import SOLOOutput

#: Original images are 128 x 160, the input of the config below: no resizing in between.
SIZE = (128, 160)


class _Rectangles:
    """A RawDataset of filled rectangles (top, left, height, width, label), one list per image."""

    class_names = ("a", "b")

    def __init__(self, images: list[list[tuple[int, int, int, int, int]]]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load_raw(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masks = torch.zeros(len(self.images[i]), *SIZE, dtype=torch.uint8)
        for k, (top, left, h, w, _) in enumerate(self.images[i]):
            masks[k, top : top + h, left : left + w] = 1
        image = torch.full((3, *SIZE), 128, dtype=torch.uint8)
        labels = torch.tensor([label for *_, label in self.images[i]], dtype=torch.int64)
        return image, {"masks": masks, "labels": labels}


def _ceiling(images, tmp_path) -> dict:
    # The midpoint threshold: bilinear upsampling of exact 0/1 masks crosses 0.5 on the
    # object's edge (the cpu preset's 0.4 would widen each mask by a fraction of a stride).
    cfg = SOLOConfig.cpu().replace(
        num_classes=2, class_names=("a", "b"), image_size=SIZE, mask_threshold=0.5
    )
    image_dir, annotations = write_coco_dataset(_Rectangles(images), tmp_path / "coco")
    dataset = CocoInstanceDataset(image_dir, annotations, cfg)
    return ceiling(DataLoader(dataset, batch_size=2, collate_fn=collate), cfg)


def test_objects_on_the_coarsest_mask_grid_reach_ap_one(tmp_path) -> None:
    """Rectangles whose edges lie on multiples of 16 px are exact at every level's mask size
    (stride 16 at the coarsest) and after the bilinear way back: every IoU is 1."""
    images = [
        [(16, 16, 48, 48, 1), (64, 96, 48, 48, 2)],
        [(16, 80, 64, 64, 1)],
    ]
    result = _ceiling(images, tmp_path)
    assert float(result["AP"]) == pytest.approx(1.0)


def test_coarse_masks_cost_ap_at_strict_iou_only(tmp_path) -> None:
    """Off the 16 px grid, the coarse masks of large objects lose IoU: still found at 0.5."""
    images = [
        [(10, 10, 40, 50, 1), (60, 90, 50, 60, 2)],
        [(20, 90, 60, 70, 1)],
    ]
    result = _ceiling(images, tmp_path)
    assert float(result["AP50"]) == pytest.approx(1.0)
    assert float(result["AP"]) < 0.9


def test_an_object_too_small_for_its_mask_is_lost_before_training(tmp_path) -> None:
    """A 3x3 object covers less than one pixel of the level-0 mask (stride 4 here): its
    mask's area is not above the level's stride, so post-processing drops it. One of two
    objects is found, at precision 1: COCO's 101-point AP is 51 / 101 (recall 0 to 0.5)."""
    images = [[(10, 10, 60, 60, 1), (100, 140, 3, 3, 1)]]
    result = _ceiling(images, tmp_path)
    assert float(result["AP50"]) == pytest.approx(51 / 101, abs=1e-4)


class _FixedOutput(torch.nn.Module):
    """A "network" whose mask makers hand out one fixed (dense) output, whatever the images."""

    def __init__(self, output) -> None:
        super().__init__()
        self.output = output

    def mask_makers(self, images: torch.Tensor):
        return dense_parts(self.output)


def test_error_sources_swap_exactly_one_output(tmp_path) -> None:
    """A model with perfect masks and no object in its category grids: its own AP is 0,
    with perfect categories it is the ceiling (1 on the 16 px grid), with perfect masks
    (its empty grids kept) still 0. The swap that lifts AP names the failing branch."""
    # The midpoint threshold: bilinear upsampling of exact 0/1 masks crosses 0.5 on the
    # object's edge (the cpu preset's 0.4 would widen each mask by a fraction of a stride).
    cfg = SOLOConfig.cpu().replace(
        num_classes=2, class_names=("a", "b"), image_size=SIZE, mask_threshold=0.5
    )
    images = [[(16, 16, 48, 48, 1), (64, 96, 48, 48, 2)], [(16, 80, 64, 64, 1)]]
    image_dir, annotations = write_coco_dataset(_Rectangles(images), tmp_path / "coco")
    dataset = CocoInstanceDataset(image_dir, annotations, cfg)
    batch = collate([dataset[i] for i in range(len(dataset))])
    perfect = perfect_output(batch[1], cfg)
    blind = SOLOOutput([torch.full_like(c, -CERTAIN) for c in perfect.category], perfect.masks)
    result = error_sources(_FixedOutput(blind), [batch], cfg)
    assert float(result["model"]["AP"]) == 0.0
    assert float(result["perfect categories"]["AP"]) == pytest.approx(1.0)
    assert float(result["perfect masks"]["AP"]) == 0.0
    assert "perfect network" not in result
    # with_ceiling: both outputs perfect, the same as `ceiling` on the same batches
    result = error_sources(_FixedOutput(blind), [batch], cfg, with_ceiling=True)
    expected = ceiling([batch], cfg)
    assert float(result["model"]["AP"]) == 0.0
    for key in ("AP", "AP50", "AP75"):
        assert result["perfect network"][key] == pytest.approx(expected[key])
    assert float(result["perfect network"]["AP"]) == pytest.approx(1.0)


def test_postprocess_sweep_changes_only_the_inference_settings(tmp_path) -> None:
    """Perfect masks whose cells score 0.6: at score threshold 0.5 every object is found
    (AP 1, as the ceiling above), at 0.7 none is (AP 0), and the config's own settings
    (``{}``) give what `postprocess` gives on the uncached outputs. A threshold below the
    cache's ``min_score`` and a field that is not an inference setting are refused."""
    from solo_lib.analysis import postprocess_sweep
    from solo_lib.browser.cache import CachedOutputs

    cfg = SOLOConfig.cpu().replace(
        num_classes=2, class_names=("a", "b"), image_size=SIZE, mask_threshold=0.5
    )
    images = [[(16, 16, 48, 48, 1), (64, 96, 48, 48, 2)], [(16, 80, 64, 64, 1)]]
    image_dir, annotations = write_coco_dataset(_Rectangles(images), tmp_path / "coco")
    dataset = CocoInstanceDataset(image_dir, annotations, cfg)
    batch_images, targets = collate([dataset[i] for i in range(len(dataset))])
    category, masks = perfect_output(targets, cfg).probabilities()
    category = [0.6 * c for c in category]  # every positive cell at 0.6, the rest at 0
    cached = CachedOutputs.from_probabilities(batch_images, targets, category, masks, 0.1)

    at_half, at_07, as_is = postprocess_sweep(
        cached, cfg, [{"score_threshold": 0.5}, {"score_threshold": 0.7}, {}]
    )
    assert float(at_half["AP"]) == pytest.approx(1.0)
    assert float(at_07["AP"]) == 0.0
    from solo_lib.evaluation import MaskEvaluator
    from solo_lib.postprocess import postprocess

    direct = MaskEvaluator(cfg.class_names)
    direct.update(
        postprocess(category, masks, targets, cfg),
        [t["original"] for t in targets],
        image_ids=[int(t["image_id"]) for t in targets],
    )
    assert float(as_is["AP"]) == pytest.approx(float(direct.compute()["AP"]))
    with pytest.raises(ValueError, match="min_score 0.1"):
        postprocess_sweep(cached, cfg, [{"score_threshold": 0.05}])
    with pytest.raises(ValueError, match="inference settings"):
        postprocess_sweep(cached, cfg, [{"num_grids": (8, 6, 4, 3, 2)}])
