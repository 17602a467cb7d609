"""Candidate-first inference (issue 29) against the dense path it replaced.

The dense path makes every cell's mask on every level (``SOLO.forward`` without
``active``), then post-processes those probabilities; the candidate-first path makes only
the masks of the cells that pass the score threshold (``SOLO.mask_makers`` and
`postprocess_parts`). Both must give the same instances: the same labels, the same
binary masks and scores within 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from test_export import scoring_model

from solo_lib import course, reference
from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.data.geometry import ImageGeometry
from solo_lib.model import SOLO
from solo_lib.module import LitSOLO
from solo_lib.postprocess import points_nms, postprocess, postprocess_parts


def dense_instances(model: SOLO, images, metas, cfg: SOLOConfig) -> list[dict]:
    """The reference: every cell's mask made, then post-processed."""
    with torch.no_grad():
        category, masks = model(images).probabilities()
    return postprocess(category, masks, metas, cfg)


def candidate_instances(model: SOLO, images, metas, cfg: SOLOConfig) -> list[dict]:
    with torch.no_grad():
        return postprocess_parts(model.mask_makers(images), metas, cfg)


def assert_same_instances(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for ours, theirs in zip(got, want, strict=True):
        assert torch.equal(ours["labels"], theirs["labels"])
        assert torch.equal(ours["masks"], theirs["masks"])
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=1e-5, rtol=0)


def _metas(cfg: SOLOConfig, batch: int) -> list[dict]:
    """Images of 300x400 laid out as the data sets do (resized to the input height)."""
    height, width = cfg.image_size
    content = (height, min(width, round(400 * height / 300)))
    return [{"geometry": ImageGeometry((300, 400), cfg.image_size, content)}] * batch


SMALL_INPUT = (256, 352)  # the paper presets at a smaller input: the same heads and grids

KINDS = {
    "cpu (decoupled)": SOLOConfig.cpu(),
    "cpu, vanilla head": SOLOConfig.cpu().replace(mask_head="vanilla"),
    "dense": SOLOConfig.dense(),
    "solov2_cpu": SOLOConfig.solov2_cpu(),
    "paper": SOLOConfig.paper().replace(image_size=SMALL_INPUT, pretrained=None),
    "solov2_paper": SOLOConfig.solov2_paper().replace(image_size=SMALL_INPUT, pretrained=None),
}


@pytest.mark.parametrize("kind", KINDS)
def test_random_models_of_every_head_give_the_dense_paths_instances(kind):
    """Random final mask layers and category scores near 0.5: hundreds of candidates
    per image, overlapping masks, Matrix NMS with work to do, on every preset's head."""
    cfg = KINDS[kind].replace(channels_last=False)
    model = scoring_model(cfg)
    images = torch.randn(2, 3, *cfg.image_size, generator=torch.Generator().manual_seed(1))
    want = dense_instances(model, images, _metas(cfg, 2), cfg)
    assert all(len(p["labels"]) >= 10 for p in want)
    assert_same_instances(candidate_instances(model, images, _metas(cfg, 2), cfg), want)


def test_the_reference_weights_give_the_dense_paths_instances():
    """The course's trained main-job model on its first validation batches."""
    run = course.reference_run(course.MAIN_JOB)
    checkpoint = reference.weights_of(run)
    lit = LitSOLO.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    data_options = yaml.safe_load((run / "config.yaml").read_text())["data"]
    data = SOLODataModule(lit.cfg, **data_options)
    data.setup("validate")
    found = 0
    for _, (images, targets) in zip(range(2), data.val_dataloader(), strict=False):
        want = dense_instances(lit.model, images, targets, lit.cfg)
        assert_same_instances(candidate_instances(lit.model, images, targets, lit.cfg), want)
        found += sum(len(p["labels"]) for p in want)
    assert found >= 20  # a trained model: objects found in every image


class CountingMasks:
    """A mask maker that records how many cells' masks it was asked to make."""

    def __init__(self, maker) -> None:
        self.maker, self.cells = maker, 0

    @property
    def shape(self):
        return self.maker.shape

    def probabilities(self, image, cells):
        self.cells += len(cells)
        return self.maker.probabilities(image, cells)


@pytest.mark.parametrize("kind", ["cpu (decoupled)", "solov2_cpu"])
def test_only_the_candidates_masks_are_made(kind):
    """As many masks are made as there are (cell, class) pairs above the score threshold
    after points NMS, not the S^2 of each level per image. The untrained network's scores (0.01)
    are all below the threshold: nothing is made and the result is empty."""
    cfg = KINDS[kind].replace(channels_last=False)
    images = torch.randn(2, 3, *cfg.image_size, generator=torch.Generator().manual_seed(2))
    for model, expect_instances in ((scoring_model(cfg), True), (SOLO(cfg).eval(), False)):
        with torch.no_grad():
            parts = model.mask_makers(images)
        counting = [CountingMasks(maker) for maker in parts.masks]
        category = parts.category_probabilities()
        result = postprocess(category, counting, _metas(cfg, 2), cfg)
        candidates = sum(int((points_nms(c) > cfg.score_threshold).sum()) for c in category)
        assert sum(m.cells for m in counting) == candidates
        assert (sum(len(p["labels"]) for p in result) > 0) == expect_instances
