"""head_flops: the branches of SOLO's and SOLOv2's heads, against FLOPs worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from solo_lib.config import SOLOConfig
from solo_lib.model import SOLO
from solo_lib.model.flops import KERNELS_APPLIED, head_flops


def _masks_flops(cfg: SOLOConfig, channels: int) -> int:
    """A 1x1 conv from `channels` to S^2 at every level's mask size: 2 FLOPs a multiply-add."""
    return sum(
        2 * s * s * channels * cfg.mask_size(level)[0] * cfg.mask_size(level)[1]
        for level, s in enumerate(cfg.num_grids)
    )


def _total(cfg: SOLOConfig) -> int:
    torch.manual_seed(0)
    model = SOLO(cfg).eval()
    features = model.backbone(torch.zeros(1, 3, *cfg.image_size))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.head(features)
    return counter.get_total_flops()


def test_solo_mask_outputs_are_s_squared_channels_at_every_mask_pixel() -> None:
    cfg = SOLOConfig.paper()
    flops = head_flops(cfg)
    assert set(flops) == {"category branch", "mask branch convs", "mask outputs"}
    assert flops["mask outputs"] == _masks_flops(cfg, cfg.head_channels)  # 85.4 GFLOPs


def test_solov2_kernels_applied_are_every_cells_e_weights_at_every_mask_pixel() -> None:
    """The dynamic 1x1 convs are matrix products outside any sub-module: the part of the
    head's total that no branch claims."""
    cfg = SOLOConfig.solov2_paper()
    flops = head_flops(cfg)
    assert set(flops) == {"category branch", "kernel branch", "mask features", KERNELS_APPLIED}
    assert flops[KERNELS_APPLIED] == _masks_flops(cfg, cfg.kernel_channels)


@pytest.mark.parametrize("preset", ["cpu", "solov2_cpu"])
def test_branches_add_up_to_the_heads_total_on_real_weights(preset) -> None:
    """The meta-device count equals the count of a real head on a real input."""
    cfg = SOLOConfig.preset(preset).replace(image_size=(128, 160))
    flops = head_flops(cfg)
    assert sum(flops.values()) == _total(cfg)
    assert (KERNELS_APPLIED in flops) == (cfg.head == "solov2")  # SOLO's head: all in modules
