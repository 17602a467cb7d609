"""The result browser without a kernel: widget values in, summary, figure and PNG out.

The probabilities are made by hand, so the expected predictions are known:
image 0 holds a vehicle and a person, found by confident cells, and a weak
animal cell with no object under it (a false positive); image 1 holds one
person, found. A fake network returns these maps as logits and counts its calls.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from solo_lib.browser import CachedOutputs, ResultBrowser, cache_outputs
from solo_lib.browser.cache import KeptMasks
from solo_lib.config import SOLOConfig
from solo_lib.data import ImageGeometry
from solo_lib.model import SOLOParts
from solo_lib.model.mask_makers import DenseMasks
from solo_lib.postprocess import postprocess

ORIG_SIZE = (72, 96)  # (H0, W0): resized x4/3 to fill the 96 x 128 input, no padding
#: Per image: (label, level-0 cell (row, col), category prob, box (x1, y1, x2, y2) in input px,
#: whether ground truth holds the object).
OBJECTS = [
    [
        (1, (3, 2), 0.9, (16, 24, 56, 48), True),
        (2, (5, 5), 0.6, (72, 48, 120, 88), True),
        (3, (1, 7), 0.3, (96, 0, 128, 24), False),
    ],
    [(2, (4, 3), 0.8, (40, 40, 72, 92), True)],
]


@pytest.fixture(scope="module")
def cfg(tiny_config: SOLOConfig) -> SOLOConfig:
    """96 x 128 input, grids (8, 6, 4, 3, 2): level-0 masks are 24 x 32."""
    assert tiny_config.image_size == (96, 128) and tiny_config.num_grids == (8, 6, 4, 3, 2)
    return tiny_config


def _item(index: int, cfg: SOLOConfig) -> tuple[torch.Tensor, dict]:
    """Image `index` of the hand-made set: a plain image and its ground truth."""
    height, width = cfg.image_size
    image = torch.full((3, height, width), 0.2 * index)
    truth = [obj for obj in OBJECTS[index] if obj[4]]
    masks = torch.zeros((len(truth), height, width), dtype=torch.uint8)
    for j, (_, _, _, (x1, y1, x2, y2), _) in enumerate(truth):
        masks[j, y1:y2, x1:x2] = 1
    # The annotations as stored: the same boxes at the original size (x 3/4, exact here).
    original = torch.zeros((len(truth), *ORIG_SIZE), dtype=torch.bool)
    for j, (_, _, _, box, _) in enumerate(truth):
        x1, y1, x2, y2 = (v * 3 // 4 for v in box)
        original[j, y1:y2, x1:x2] = True
    labels = torch.tensor([obj[0] for obj in truth], dtype=torch.int64)
    target = {
        "labels": labels,
        "masks": masks,
        "boxes": torch.tensor([obj[3] for obj in truth], dtype=torch.float32).reshape(-1, 4),
        "image_id": torch.tensor(10 + index),
        "geometry": ImageGeometry(ORIG_SIZE, (height, width), (height, width)),
        "original": {"masks": original, "labels": labels, "iscrowd": torch.zeros_like(labels)},
    }
    return image, target


def _probabilities(cfg: SOLOConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per level (N, C, S, S) and (N, S*S, h, w): 0.01 everywhere but the objects' cells."""
    n = len(OBJECTS)
    cates = [torch.full((n, cfg.num_classes, s, s), 0.01) for s in cfg.num_grids]
    masks = [
        torch.full((n, s * s, *cfg.mask_size(lvl)), 0.02) for lvl, s in enumerate(cfg.num_grids)
    ]
    scale = cfg.image_size[0] // cfg.mask_size(0)[0]
    for i, objects in enumerate(OBJECTS):
        for label, (row, col), prob, (x1, y1, x2, y2), _ in objects:
            cell = row * cfg.num_grids[0] + col
            cates[0][i, label - 1, row, col] = prob
            masks[0][i, cell, y1 // scale : y2 // scale, x1 // scale : x2 // scale] = 0.9
    return cates, masks


class FakeSOLO(nn.Module):
    """Returns the hand-made maps as logits, for images whose first pixel is 0.2 * index."""

    def __init__(self, cfg: SOLOConfig) -> None:
        super().__init__()
        self.cates, self.masks = _probabilities(cfg)
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def mask_makers(self, images: torch.Tensor) -> SOLOParts:
        self.calls += 1
        index = (images[:, 0, 0, 0] / 0.2).round().long()
        return SOLOParts(
            [level[index].logit() * self.scale for level in self.cates],
            [DenseMasks(level[index].logit()) for level in self.masks],
        )


@pytest.fixture()
def model(cfg: SOLOConfig) -> FakeSOLO:
    return FakeSOLO(cfg).train()


@pytest.fixture()
def browser(model: FakeSOLO, cfg: SOLOConfig) -> ResultBrowser:
    dataset = [_item(i, cfg) for i in range(len(OBJECTS))]
    return ResultBrowser(cache_outputs(model, dataset, [0, 1], cfg, batch_size=1), cfg)


def test_cache_runs_the_network_once_per_batch_and_restores_training_mode(model, cfg):
    dataset = [_item(i, cfg) for i in range(len(OBJECTS))]
    cached = cache_outputs(model, dataset, [1, 0], cfg, batch_size=2)
    assert model.calls == 1
    assert model.training
    assert len(cached) == 2 and [cached.image_id(i) for i in range(2)] == [11, 10]
    assert cached.images[0].device.type == "cpu"
    # only the object cells (>= 0.05) keep their masks, in the cache's reduced dtype
    assert [cells.tolist() for cells in cached.mask_cells[0]] == [[35], [], [], [], []]
    assert cached.mask_probs[1][0].shape == (3, *cfg.mask_size(0))  # image 0: 3 cells
    assert cached.mask_probs[1][0].dtype == torch.float16
    assert cached.nbytes < sum(t.numel() * t.element_size() for t in _probabilities(cfg)[1])


def test_dropped_cells_do_not_change_the_predictions(cfg):
    """Cells below min_score never pass a threshold >= min_score: same instances as dense."""
    cates, masks = _probabilities(cfg)
    items = [_item(i, cfg) for i in range(len(OBJECTS))]
    cached = CachedOutputs.from_probabilities(
        [image for image, _ in items], [t for _, t in items], cates, masks, min_score=0.05
    )
    for i, (_, target) in enumerate(items):
        dense = postprocess(
            [c[i : i + 1] for c in cates], [m[i : i + 1] for m in masks], [target], cfg, 0.05
        )[0]
        sparse = postprocess(*cached.probabilities(i), [target], cfg, 0.05)[0]
        assert torch.equal(dense["labels"], sparse["labels"])
        assert torch.equal(dense["masks"], sparse["masks"])
        torch.testing.assert_close(dense["scores"], sparse["scores"], atol=1e-3, rtol=0)


def test_score_threshold_slider_reruns_postprocess_without_the_network(browser, model):
    calls = model.calls
    browser.score_slider.value = 0.1
    assert browser.summary.startswith(
        "image 10: 3 predictions (score > 0.10, mask > 0.40), 2 match"
    )
    assert browser.summary.endswith("(2 objects)")
    runs = browser.postprocess_runs
    browser.score_slider.value = 0.5
    assert browser.postprocess_runs == runs + 1
    assert "image 10: 2 predictions (score > 0.50" in browser.summary
    assert "2 match ground truth at IoU >= 0.5" in browser.summary
    browser.score_slider.value = 0.7
    assert "1 prediction (score > 0.70" in browser.summary
    assert "1 match" in browser.summary
    assert model.calls == calls


def test_mask_threshold_slider_reaches_postprocess(browser):
    browser.score_slider.value = 0.1
    assert browser.view.predictions["labels"].shape[0] == 3
    browser.mask_slider.value = 0.95  # above every mask probability: every mask is empty
    assert browser.view.predictions["labels"].shape[0] == 0
    assert "0 predictions (score > 0.10, mask > 0.95), 0 match" in browser.summary


def test_class_filter_hides_classes_in_predictions_and_ground_truth(browser):
    browser.score_slider.value = 0.1
    runs = browser.postprocess_runs
    browser.class_filter.value = (1,)
    heat = browser.view.heat_maps[0]  # the vehicle map alone, after points NMS
    assert heat[3, 2].item() == pytest.approx(0.9) and heat[0, 0].item() == pytest.approx(0.01)
    assert heat[3, 3] == 0 and heat[4, 3] == 0  # 2x2 windows that hold the 0.9 peak
    assert browser.view.predictions["labels"].tolist() == [1]
    assert browser.view.ground_truth["labels"].tolist() == [1]
    assert "1 prediction " in browser.summary and "(1 object); classes: vehicle" in browser.summary
    browser.class_filter.value = (3,)
    assert browser.view.predictions["labels"].tolist() == [3]
    assert "1 prediction " in browser.summary and "0 match" in browser.summary
    assert browser.view.heat_maps[0].max().item() == pytest.approx(0.3)
    browser.class_filter.value = ()
    assert "0 predictions" in browser.summary and "classes: none" in browser.summary
    assert browser.postprocess_runs == runs  # filtering reuses the post-processed instances


def test_image_slider_changes_summary_and_picture(browser):
    before = bytes(browser.image.value)
    assert before.startswith(b"\x89PNG")
    browser.image_slider.value = 1
    assert browser.summary.startswith("image 11: 1 prediction (score > 0.10")
    assert "1 match ground truth at IoU >= 0.5 (1 object)" in browser.summary
    assert bytes(browser.image.value) != before
    assert browser.summary_html.value == f"<b>{browser.summary}</b>"
    assert browser.view.predictions["masks"].shape[1:] == ORIG_SIZE


def test_figure_has_ground_truth_prediction_and_one_heat_map_per_level(browser, cfg):
    figure = browser.figure
    titles = [axes.get_title() for axes in figure.get_axes()]
    assert titles[:2] == ["ground truth: 2 objects", "prediction: 3, 2 matched"]
    levels = [f"level {lvl}: S={s}" for lvl, s in enumerate(cfg.num_grids)]
    assert titles[2 : 2 + cfg.num_levels] == levels
    heat = figure.get_axes()[2].get_images()[0].get_array()
    assert heat.shape == (8, 8) and heat[3, 2] == pytest.approx(0.9)
    static = browser.static_figure()
    assert static is not figure
    assert [axes.get_title() for axes in static.get_axes()] == titles


def test_browser_displays_as_its_widget(browser):
    bundle = browser._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == browser.widget.model_id
    assert "solo-result-browser" in browser.widget._dom_classes


def test_browser_rejects_a_cache_of_another_config(browser, cfg):
    with pytest.raises(ValueError, match="the cache has \\[5\\] levels, the config 4"):
        ResultBrowser(browser.cached, cfg.replace(num_grids=(8, 6, 4, 3), strides=(8, 8, 16, 32)))


def test_kept_masks_hand_out_the_kept_cells_and_name_the_others():
    """Cells 2 and 5 of 9 kept: their masks come back in the order asked; a cell that was
    not kept (below the cache's min_score) and another image are errors that say so."""
    masks = torch.stack([torch.full((2, 3), 0.2), torch.full((2, 3), 0.7)]).half()
    kept = KeptMasks(torch.tensor([2, 5]), masks, num_cells=9)
    assert kept.shape == (1, 9, 2, 3)
    got = kept.probabilities(0, torch.tensor([5, 2, 5]))
    assert got.dtype == torch.float32
    assert torch.equal(got, masks[[1, 0, 1]].float())
    with pytest.raises(ValueError, match=r"cells \[3\] were not kept.*min_score"):
        kept.probabilities(0, torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="one image's masks"):
        kept.probabilities(1, torch.tensor([2]))
