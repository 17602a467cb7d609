"""The presets carry the paper's numbers, and bad settings are refused with the field named.

(The YAML files and the presets: tests/test_presets.py.)
"""

import dataclasses

import pytest

from solo_lib.config import PAPER_SCALE_RANGES, SOLOConfig, fast_mode


def test_paper_preset_has_the_reference_numbers():
    cfg = SOLOConfig.paper()
    assert cfg.image_size == (800, 1088)
    assert cfg.backbone_depth == 50
    assert (cfg.fpn_channels, cfg.head_channels, cfg.num_stacked_convs) == (256, 256, 7)
    assert cfg.num_grids == (40, 36, 24, 16, 12)
    assert sum(s * s for s in cfg.num_grids) == 3872
    assert cfg.strides == (8, 8, 16, 32, 32)
    assert cfg.scale_ranges == PAPER_SCALE_RANGES
    assert cfg.center_epsilon == 0.2
    assert (cfg.focal_alpha, cfg.focal_gamma, cfg.mask_loss_weight) == (0.25, 2.0, 3.0)
    assert (cfg.nms_pre, cfg.max_per_img, cfg.nms_sigma) == (500, 100, 2.0)
    assert (cfg.max_epochs, cfg.lr_milestones) == (36, (27, 33))
    assert cfg.learning_rate(16) == pytest.approx(0.01)
    assert cfg.grad_clip_norm == 35.0
    assert [cfg.feature_size(i) for i in range(5)] == [
        (100, 136),
        (100, 136),
        (50, 68),
        (25, 34),
        (25, 34),
    ]
    assert cfg.mask_size(0) == (200, 272)


def test_cpu_preset_derives_its_scale_ranges_from_the_input_height():
    cfg = SOLOConfig.cpu()
    assert 256 <= cfg.image_size[0] <= 320
    assert cfg.backbone_depth == 10
    factor = cfg.image_size[0] / 800
    for (lo, hi), (plo, phi) in zip(cfg.scale_ranges, PAPER_SCALE_RANGES, strict=True):
        assert (lo, hi) == pytest.approx((plo * factor, phi * factor))
    taller = cfg.replace(image_size=(320, 448))
    assert taller.scale_ranges[0][1] == pytest.approx(96 * 320 / 800)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"image_size": (250, 352)}, "image_size"),
        ({"num_grids": (40, 36)}, "strides"),
        ({"nms_kernel": "box"}, "nms_kernel"),
        ({"class_names": ("a",)}, "class_names"),
        # Values that used to be accepted and then failed late (or never):
        ({"map_every_n_epochs": 0}, "map_every_n_epochs"),
        ({"base_lr": -0.01}, "base_lr"),
        ({"base_lr": float("nan")}, "base_lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"image_size": (0, 0)}, "image_size"),
        ({"pixel_std": (0.0, 0.2, 0.2)}, "pixel_std"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"mask_threshold": float("nan")}, "mask_threshold"),
        ({"scale_jitter": (1.0, 0.8)}, "scale_jitter"),
        ({"scale_jitter": (0.8, 1.2)}, "scale_jitter"),  # was clamped to 1 without a word
        ({"max_epochs": None, "time_budget_min": None}, "max_epochs"),  # no end at all
        # milestones in epochs of a run whose length the budget has not planned yet
        ({"lr_schedule": "step", "lr_milestones": (2,), "max_epochs": None}, "lr_milestones"),
        ({"head_channels": 48}, "head_channels"),
        ({"time_budget_min": 0}, "time_budget_min"),
        ({"warmup_ratio": 0}, "warmup_ratio"),
        ({"class_names": "car", "num_classes": 3}, "class_names"),
        ({"head": "solov3"}, "head must be 'solo' or 'solov2'"),
        ({"head": "solov2"}, "mask_head"),  # the cpu preset's decoupled SOLO mask branch
        ({"kernel_channels": 48}, "kernel_channels"),
        ({"mask_branch_channels": 0}, "mask_branch_channels"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(changes, field):
    with pytest.raises(ValueError, match=field):
        SOLOConfig.cpu().replace(**changes)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="cpu"):
        SOLOConfig.preset("tiny")


def test_fast_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SOLO_FAST", "1")
    assert fast_mode()
    monkeypatch.setenv("SOLO_FAST", "0")
    assert not fast_mode()


def test_gpu_preset_is_the_cpu_recipe_grown_for_one_gpu():
    """What `SOLOConfig.gpu` says it is: the cpu preset but for the network's size, the
    batch, the loader, the layout and the budget; the rate per image is the cpu preset's."""
    cpu, gpu = SOLOConfig.cpu(), SOLOConfig.gpu()
    changed = {
        field: value
        for field, value in dataclasses.asdict(gpu).items()
        if value != getattr(cpu, field)
    }
    assert changed == {
        "name": "gpu",
        "batch_size": 16,
        "num_workers": 12,
        "backbone_depth": 18,
        "backbone_width": 64,
        "channels_last": False,
        "fpn_channels": 64,
        "head_channels": 64,
        "time_budget_min": 9.5,
    }
    assert gpu.learning_rate(gpu.batch_size) == pytest.approx(0.008)


def test_gpu_preset_network_has_the_size_its_docstring_gives():
    from solo_lib.model import SOLO

    network = SOLO(SOLOConfig.gpu())
    assert sum(p.numel() for p in network.parameters()) / 1e6 == pytest.approx(11.6, abs=0.05)
    assert sum(p.numel() for p in network.head.parameters()) / 1e6 == pytest.approx(0.23, abs=0.005)
