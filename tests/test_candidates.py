"""Candidate-first inference (issue 29) against the dense path.

The dense path makes every cell's mask on every level at once (``SOLO.forward`` without
``active``: each maker's `dense()`), then post-processes those probabilities; the
candidate-first path makes only the masks of the cells that pass the score threshold
(``SOLO.mask_makers`` and `postprocess_parts`, each maker's `logits` for some cells).
Both must give the same instances: the same labels, the same binary masks and scores
within 1e-5. The two share the makers' tensors; that those are the heads' masks is
checked against independent oracles elsewhere (`test_model`: vanilla SOLO's 1x1
convolution; `test_solov2`: SOLOv2's kernels as ``F.conv2d``).
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import yaml
from test_export import scoring_model

from solo_lib import course, reference
from solo_lib.browser import cache_outputs
from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.data.geometry import ImageGeometry
from solo_lib.model import SOLO
from solo_lib.model.mask_makers import DenseMasks, FactorMasks, KernelMasks, MaskMaker
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
    """As many masks are made as there are cells with a class above the score threshold
    after points NMS (one mask per cell, however many of its classes pass), not the S^2 of
    each level per image. The untrained network's scores (0.01) are all below the
    threshold: nothing is made and the result is empty."""
    cfg = KINDS[kind].replace(channels_last=False)
    images = torch.randn(2, 3, *cfg.image_size, generator=torch.Generator().manual_seed(2))
    for model, expect_instances in ((scoring_model(cfg), True), (SOLO(cfg).eval(), False)):
        with torch.no_grad():
            parts = model.mask_makers(images)
        counting = [CountingMasks(maker) for maker in parts.makers]
        category = parts.category_probabilities()
        result = postprocess(category, counting, _metas(cfg, 2), cfg)
        passing = [points_nms(c) > cfg.score_threshold for c in category]  # (B, C, S, S)
        pairs = sum(int(p.sum()) for p in passing)
        cells = sum(int(p.any(dim=1).sum()) for p in passing)
        assert sum(m.cells for m in counting) == cells
        assert pairs > cells or not expect_instances  # some cell passes for two classes
        assert (sum(len(p["labels"]) for p in result) > 0) == expect_instances


def test_no_inference_path_makes_every_cells_mask(monkeypatch):
    """`dense()` is the tests' reference alone: `SOLO.predict`, validation with mask AP and
    the result browser's cache make the candidates' masks, and fail here if one made all."""

    def refuse(maker: MaskMaker) -> torch.Tensor:
        raise AssertionError(f"{type(maker).__name__}.dense(): every cell's mask made")

    for maker_type in (KernelMasks, FactorMasks, DenseMasks):
        monkeypatch.setattr(maker_type, "dense", refuse)
    run = course.reference_run(course.MAIN_JOB)
    checkpoint = reference.weights_of(run)
    lit = LitSOLO.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    data = SOLODataModule(lit.cfg, **yaml.safe_load((run / "config.yaml").read_text())["data"])
    data.setup("validate")
    images, targets = next(iter(data.val_dataloader()))
    with torch.no_grad():
        assert sum(len(p["labels"]) for p in lit.model.predict(images, targets)) > 0
    assert len(cache_outputs(lit.model, data.val_dataset, [0, 1], lit.cfg)) == 2
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )
    [metrics] = trainer.validate(lit, data, verbose=False)
    assert metrics["val/AP50"] > 0.3  # a trained model's mask AP, from the candidates alone


def test_makers_made_under_bf16_autocast_post_process_after_it():
    """Vanilla SOLO's kernels are float32 weights and its features bf16 under autocast:
    masks made once autocast has ended (post-processing) used to raise a dtype mismatch."""
    cfg = KINDS["cpu, vanilla head"].replace(channels_last=False)
    model = scoring_model(cfg)
    images = torch.randn(2, 3, *cfg.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        parts = model.mask_makers(images)
    maker = parts.makers[0]
    assert (maker.features.dtype, maker.kernels.dtype) == (torch.bfloat16, torch.float32)
    cells = torch.tensor([0, 5, 17])
    with torch.no_grad():
        torch.testing.assert_close(maker.logits(1, cells), maker.dense()[1, cells])
        assert sum(len(p["labels"]) for p in postprocess_parts(parts, _metas(cfg, 2), cfg)) > 0
