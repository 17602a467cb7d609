"""SOLOv2's dynamic head: shapes, the kernels applied by hand, training path, init, overfit,
and its architecture diagram."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.losses import solo_loss
from solo_lib.model import SOLO
from solo_lib.model.diagram import draw_architecture
from solo_lib.model.mask_makers import KernelMasks
from solo_lib.model.solov2 import SOLOv2Head
from solo_lib.module import batch_losses
from solo_lib.targets import build_batch_targets


def _solov2(cfg: SOLOConfig) -> SOLOConfig:
    """``cfg`` (a SOLO config) with SOLOv2's head, E = 32."""
    return cfg.replace(head="solov2", mask_head="vanilla", kernel_channels=32)


def _random_kernel_model(image_size: tuple[int, int] = (128, 160)) -> tuple[SOLO, SOLOConfig]:
    """A solov2_cpu SOLO whose kernel output conv has random weights, so that every cell's
    kernel differs markedly (at init they are all near 0)."""
    cfg = SOLOConfig.solov2_cpu().replace(image_size=image_size, channels_last=False)
    torch.manual_seed(0)
    model = SOLO(cfg)
    with torch.no_grad():
        model.head.kernel_out.weight.normal_(0, 0.2)
        model.head.kernel_out.bias.normal_(0, 0.5)
    return model, cfg


def _first_batch(cfg: SOLOConfig, root) -> tuple[torch.Tensor, list[dict]]:
    """The first validation batch of the tiny data set (no augmentation: the same each time)."""
    return next(iter(SOLODataModule(cfg, root=str(root)).val_dataloader()))


def _check_shapes(model: SOLO, cfg: SOLOConfig, batch: int) -> None:
    with torch.no_grad():
        output = model(torch.randn(batch, 3, *cfg.image_size))
    assert len(output.category) == len(output.masks) == cfg.num_levels
    for level, s in enumerate(cfg.num_grids):
        assert output.category[level].shape == (batch, cfg.num_classes, s, s)
        assert output.masks[level].shape == (batch, s * s, *cfg.mask_size(level))
    assert all(torch.isfinite(x).all() for x in output.category + output.masks)


def test_solov2_cpu_preset_output_shapes() -> None:
    cfg = SOLOConfig.solov2_cpu()
    torch.manual_seed(0)
    model = SOLO(cfg).eval()
    assert isinstance(model.head, SOLOv2Head)
    _check_shapes(model, cfg, batch=2)


def test_solov2_paper_preset_output_shapes_on_a_small_input() -> None:
    """The official head (4 x 512-channel convs, E = 256, 128-channel mask feature branch)
    and the paper's grids, on a 128 x 160 input so that ResNet-50 stays fast."""
    cfg = SOLOConfig.solov2_paper().replace(image_size=(128, 160))
    torch.manual_seed(0)
    model = SOLO(cfg).eval()
    head = model.head
    assert head.kernel_out.out_channels == cfg.kernel_channels == 256
    assert head.kernel_convs[0].out_channels == cfg.head_channels == 512
    assert head.mask_features.fuse[0].in_channels == cfg.mask_branch_channels == 128
    assert len(head.mask_features.levels) == 4  # P2-P5; level 4 (P6) adds nothing
    _check_shapes(model, cfg, batch=1)


def _coords_by_hand(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) with CoordConv's channels appended: x from -1 (left column) to 1
    (right), then y from -1 (top row) to 1 (bottom)."""
    b, _, h, w = x.shape
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
    return torch.cat([x, xs, ys], dim=1)


def _conv_gn_relu(x: torch.Tensor, module: torch.nn.Module, kernel: int) -> torch.Tensor:
    """[conv (no bias), GroupNorm(32), ReLU] x depth by functional calls, with the weights
    of `module`'s convs and norms, in order."""
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in module.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == len(norms) > 0
    for conv, norm in zip(convs, norms, strict=True):
        assert conv.weight.shape[-2:] == (kernel, kernel) and conv.bias is None
        x = F.conv2d(x, conv.weight, padding=kernel // 2)
        x = F.relu(F.group_norm(x, 32, norm.weight, norm.bias, norm.eps))
    return x


def _mask_features_by_hand(head: SOLOv2Head, features: list[torch.Tensor]) -> torch.Tensor:
    """SOLOv2's unified mask features (paper, Fig. 4) from functional calls and the head's
    weights: level l of levels 0-3, n_l = log2(stride_l / 8) octaves above the finest
    (0, 0, 1, 2), goes through max(1, n_l) x [3x3 conv, GN, ReLU], each of the first n_l
    followed by a x2 bilinear upsampling; the coarsest first gets the coordinates. The
    sum goes through a 1x1 conv, GN and ReLU."""
    summed = 0
    for level, (x, octaves) in enumerate(zip(features[:4], (0, 0, 1, 2), strict=True)):
        if level == 3:
            x = _coords_by_hand(x)
        stages = [m for m in head.mask_features.levels[level] if isinstance(m, torch.nn.Sequential)]
        assert len(stages) == max(1, octaves)
        for i, stage in enumerate(stages):
            x = _conv_gn_relu(x, stage, kernel=3)
            if i < octaves:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        summed = summed + x
    return _conv_gn_relu(summed, head.mask_features.fuse, kernel=1)


def _kernels_by_hand(head: SOLOv2Head, feature: torch.Tensor, s: int) -> torch.Tensor:
    """(B, E, S, S) kernel map: the feature resized (bilinear) to S x S, the coordinates
    appended, 3x3 [conv, GN, ReLU] x depth, a 3x3 conv with bias to E channels."""
    grid = _coords_by_hand(F.interpolate(feature, size=(s, s), mode="bilinear"))
    x = _conv_gn_relu(grid, head.kernel_convs, kernel=3)
    return F.conv2d(x, head.kernel_out.weight, head.kernel_out.bias, padding=1)


def test_the_masks_equal_an_oracle_from_functional_calls_and_the_heads_weights() -> None:
    """Cell (row, col)'s mask = the mask features (built by `_mask_features_by_hand`, then
    resized bilinearly to the level's mask size) convolved with the kernel at (row, col)
    of `_kernels_by_hand`'s map as a 1x1 weight, plus ``mask_bias``. The oracle calls
    F.conv2d, F.group_norm, F.relu and F.interpolate on the head's parameters, none of
    the head's own code, so a bug in any of its branches shows here."""
    model, cfg = _random_kernel_model()
    model.eval()
    head = model.head
    assert cfg.strides[:4] == (8, 8, 16, 32)  # the octaves (0, 0, 1, 2) of the oracle
    with torch.no_grad():
        features = model.backbone(torch.randn(2, 3, *cfg.image_size))
        _, masks = head(features)
        unified = _mask_features_by_hand(head, features)
        assert unified.shape == (2, cfg.kernel_channels, *cfg.feature_size(0))
        for level, (feature, s) in enumerate(zip(features, cfg.num_grids, strict=True)):
            kernel_map = _kernels_by_hand(head, feature, s)
            resized = F.interpolate(unified, size=cfg.mask_size(level), mode="bilinear")
            for b, row, col in [(0, 0, 0), (1, 0, s - 1), (0, s - 1, 1), (1, s // 2, s // 3)]:
                kernel = kernel_map[b, :, row, col].view(1, -1, 1, 1)  # (1, E, 1, 1)
                by_hand = F.conv2d(resized[b : b + 1], kernel, head.mask_bias.view(1))[0, 0]
                torch.testing.assert_close(
                    masks[level][b, row * s + col], by_hand, atol=1e-4, rtol=1e-4
                )


def test_resizing_the_features_first_equals_resizing_the_masks() -> None:
    """Levels 3-4 want stride-16 masks from stride-8 features: resizing the E features
    before the 1x1 kernels gives the masks that resizing each full-size mask would."""
    model, cfg = _random_kernel_model()
    model.eval()
    head = model.head
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, *cfg.image_size))
        _, masks = head(features)
        s = cfg.num_grids[3]
        grid = F.interpolate(features[3], size=(s, s), mode="bilinear", align_corners=False)
        kernels = head.kernels(grid)  # (1, S^2, E)
        bias = head.mask_bias.expand(1, s * s)
        full = KernelMasks(head.mask_features(features[:4]), kernels, bias).dense()
        after = F.interpolate(full, size=cfg.mask_size(3), mode="bilinear")
    torch.testing.assert_close(masks[3], after, atol=1e-4, rtol=1e-4)


def test_active_masks_equal_the_dense_masks_at_those_cells_with_their_gradients() -> None:
    model, cfg = _random_kernel_model()
    images = torch.randn(3, 3, *cfg.image_size)
    generator = torch.Generator().manual_seed(1)
    active = [torch.rand(3, s * s, generator=generator) < 0.1 for s in cfg.num_grids]
    active[1][1] = False  # an image with no active cell on a level
    dense = model(images).masks
    sparse = model(images, active).masks
    for level, (d, a) in enumerate(zip(dense, active, strict=True)):
        assert sparse[level].shape == (int(a.sum()), *cfg.mask_size(level))
        torch.testing.assert_close(sparse[level], d[a], atol=1e-4, rtol=1e-4)
    weight = model.head.kernel_out.weight
    (grad_dense,) = torch.autograd.grad(dense[0][active[0]].sum(), weight)
    (grad_sparse,) = torch.autograd.grad(sparse[0].sum(), weight)
    torch.testing.assert_close(grad_sparse, grad_dense, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match=r"active must be \(B, S\^2\)"):
        model(images, [a[:2] for a in active])


def test_loss_at_init_is_the_focal_prior_and_a_dice_near_one(tiny_config, tiny_data_dir) -> None:
    """Every output starts near p = 0.01, so the losses at init are known in advance.

    Focal: a positive entry (its class at a positive cell) costs alpha (1 - p)^gamma
    (-log p) = 0.25 * 0.99^2 * 4.605 = 1.128; a negative one (1 - alpha) p^gamma
    (-log(1 - p)) = 0.75 * 1e-4 * 0.01005 = 7.5e-7. Summed and divided by
    (N_pos + 1): N_pos / (N_pos + 1) * 1.128, plus the negatives' 7.5e-7 each.

    Dice: a mask of constant p = 0.01 on a target of area A in N pixels gives
    1 - 2 * 0.01 * A / (1e-4 * N + A + 1e-3), just under 1 - 0.02 = 0.98 for the small
    objects of the data set. The kernels are not exactly 0, so p varies a little
    around 0.01 from pixel to pixel: both are compared with a tolerance.
    """
    cfg = _solov2(tiny_config)
    torch.manual_seed(0)
    model = SOLO(cfg).train()
    images, targets = _first_batch(cfg, tiny_data_dir)
    level_targets = build_batch_targets(targets, cfg)
    with torch.no_grad():
        losses = solo_loss(model(images), level_targets, cfg)

    p, alpha, gamma = 0.01, cfg.focal_alpha, cfg.focal_gamma
    positive = alpha * (1 - p) ** gamma * -math.log(p)
    negative = (1 - alpha) * p**gamma * -math.log(1 - p)
    num_pos = sum(int((t.category > 0).sum()) for t in level_targets)
    num_entries = sum(t.category.numel() for t in level_targets) * cfg.num_classes
    focal = (num_pos * positive + (num_entries - num_pos) * negative) / (num_pos + 1)
    assert num_pos > 0
    assert losses["focal"].item() == pytest.approx(focal, rel=0.05)

    dices = []
    for t in level_targets:  # each level's targets (P_l, h, w) at its own mask size
        areas, pixels = t.masks.flatten(1).float().sum(1), t.masks.shape[1] * t.masks.shape[2]
        dices.append(1 - 2 * p * areas / (p * p * pixels + areas + 1e-3))
    dice = torch.cat(dices).mean().item()
    assert 0.97 < dice < 1
    assert losses["dice"].item() == pytest.approx(dice, abs=0.01)


def test_one_batch_overfit_makes_the_dice_fall(tiny_config, tiny_data_dir) -> None:
    cfg = _solov2(tiny_config)
    torch.manual_seed(0)
    model = SOLO(cfg).train()
    images, targets = _first_batch(cfg, tiny_data_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        losses, _ = batch_losses(model, images, targets, cfg)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append((losses["focal"].item(), losses["dice"].item()))
    (focal0, dice0), (focal1, dice1) = history[0], history[-1]
    assert dice1 < 0.3 * dice0, history  # 0.98 -> 0.04-0.09 over seeds 0-2
    assert focal1 < 0.7 * focal0, history


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"head": "solov3"}, "head must be 'solo' or 'solov2', got 'solov3'"),
        ({"head": "solov2", "mask_head": "decoupled"}, "head 'solov2' has its own"),
        ({"strides": (8, 12, 16, 32, 32)}, "power of two"),
        ({"kernel_channels": 40}, "kernel_channels must be a positive multiple of 32"),
    ],
)
def test_bad_solov2_settings_are_refused_with_a_clear_error(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        SOLOConfig.solov2_cpu().replace(**changes)


def _diagram_texts(cfg: SOLOConfig) -> list[str]:
    """Every text of `draw_architecture`'s figure for ``cfg``, after a draw."""
    figure = draw_architecture(cfg)
    try:
        figure.canvas.draw()
        return [text.get_text() for text in figure.axes[0].texts]
    finally:
        plt.close(figure)


def test_solov2_diagram_draws_its_branches_with_the_config_sizes() -> None:
    """Oracle, by hand for a 192 x 256 input and E = 64: the kernels are 64 x S x S per
    level, the mask features 64 x 24 x 32 (stride 8: 192 / 8, 256 / 8), the masks
    S^2 x 48 x 64 on levels 0-1 (stride 4) and S^2 x 12 x 16 on levels 3-4 (stride 16)."""
    cfg = SOLOConfig.solov2_cpu().replace(
        image_size=(192, 256), kernel_channels=64, num_grids=(20, 14, 10, 7, 5)
    )
    texts = _diagram_texts(cfg)
    for kernels in ("64 x 20 x 20", "64 x 14 x 14", "64 x 10 x 10", "64 x 7 x 7", "64 x 5 x 5"):
        assert kernels in texts, kernels
    for masks in (
        "400 x 48 x 64",
        "196 x 48 x 64",
        "100 x 24 x 32",
        "49 x 12 x 16",
        "25 x 12 x 16",
    ):
        assert masks in texts, masks
    joined = "\n".join(texts)
    assert "mask features F\n64 x 24 x 32  (/8)" in texts
    assert "kernel branch" in joined and "3x3 conv -> E = 64" in joined
    assert "levels 0-3" in joined and "n = 0, 0, 1, 2" in joined  # octaves above stride 8
    assert "1x1 conv -> S\u00b2" not in joined  # SOLO's S^2-channel mask output
    assert "decoupled mask branch" not in joined and "1x1 conv -> S (one" not in joined


def test_solo_diagram_has_no_kernel_branch() -> None:
    for cfg in (SOLOConfig.cpu(), SOLOConfig.cpu().replace(mask_head="vanilla")):
        texts = _diagram_texts(cfg)
        joined = "\n".join(texts)
        assert "kernel" not in joined and "mask feature" not in joined
        assert "\u229b" not in joined  # no dynamic convolution
        assert f"{cfg.kernel_channels} x 16 x 16" not in texts
        assert "256 x 64 x 88" in texts  # SOLO's S^2 x h x w masks of level 0
    assert "1x1 conv -> S\u00b2" in joined  # the vanilla mask branch, absent from SOLOv2's


@pytest.mark.parametrize("preset", ["solov2_cpu", "solov2_paper"])
def test_solov2_diagram_texts_do_not_overlap(preset) -> None:
    figure = draw_architecture(getattr(SOLOConfig, preset)())
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in figure.axes[0].texts]
        width = figure.bbox.width
    finally:
        plt.close(figure)
    for i, (text, box) in enumerate(boxes):
        assert 0 <= box.x0 and box.x1 <= width, f"{text!r} leaves the figure"
        for other, other_box in boxes[i + 1 :]:
            assert not box.overlaps(other_box), f"{text!r} overlaps {other!r}"
