"""Exercise of notebook 03 on the network: CoordConv's coordinate channels (3.1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from solo_lib.exercises.check import Case, run_check
from solo_lib.model.heads import coord_features


# --- CoordConv's coordinate channels (notebook 03) ---------------------------------------
def _coord_cases() -> list[Case]:
    """A hand-made map, a batch of non-square maps, seeded random sizes, a float64 map.

    The channels depend only on the feature's size and dtype, not on its values; the
    values are random all the same, as a real feature map's would be.
    """
    generator = torch.Generator().manual_seed(4)
    cases = [
        Case(
            "a hand-made (1, 4, 3, 5) feature map: x should be [-1, -0.5, 0, 0.5, 1] along "
            "each row, y [-1, 0, 1] down each column",
            (torch.randn(1, 4, 3, 5, generator=generator),),
        ),
        Case(
            "a batch of 3 non-square feature maps (3, 8, 5, 7)",
            (torch.randn(3, 8, 5, 7, generator=generator),),
        ),
    ]
    for _ in range(2):
        b, c, h, w = torch.randint(2, 13, (4,), generator=generator).tolist()
        cases.append(
            Case(
                f"a seeded random feature map of size {(b, c, h, w)}",
                (torch.randn(b, c, h, w, generator=generator),),
            )
        )
    cases.append(
        Case(
            "a float64 (2, 1, 6, 4) feature map (the channels take the feature's dtype)",
            (torch.randn(2, 1, 6, 4, generator=generator, dtype=torch.float64),),
        )
    )
    return cases


def _coord_form_problem(got: object, feature: Tensor) -> str | None:
    """A message when `got` is not a (B, 2, H, W) tensor of `feature`'s dtype, with the
    likely cause when the shape is one of the usual wrong ones."""
    b, _, h, w = feature.shape
    expected = (b, 2, h, w)
    form = f"(B, 2, H, W) = {expected}, the x and y channels of every image"
    if not isinstance(got, Tensor):
        return f"expected a torch.Tensor of shape {form}, got {type(got).__name__}"
    if got.shape != expected:
        message = f"expected shape {form}, got {tuple(got.shape)}"
        if tuple(got.shape) == (2, h, w):
            message += (
                "\n  Your shape matches a common mistake: is the batch dimension missing? "
                "Every image gets the same two channels, e.g. with .expand(B, 2, H, W)"
            )
        elif tuple(got.shape[-3:]) == (2, h, w):
            message += (
                "\n  Your shape matches a common mistake: are the channels expanded over the "
                "batch? Every image gets the same two channels, e.g. with .expand(B, 2, H, W)"
            )
        elif h != w and tuple(got.shape) == (b, 2, w, h):
            message += (
                "\n  Your shape matches a common mistake: are H and W swapped? With "
                'torch.meshgrid(ys, xs, indexing="ij") both grids are (H, W), y varying '
                "down the rows and x along the columns"
            )
        elif tuple(got.shape) == (b, h, w, 2):
            message += (
                "\n  Your shape matches a common mistake: are the channels last? Stack x "
                "and y on dim 1, channels first, as PyTorch's convolutions read them"
            )
        return message
    if got.dtype != feature.dtype:
        return (
            f"expected dtype {feature.dtype}, the feature's (pass dtype=feature.dtype to "
            f"torch.linspace), got {got.dtype}"
        )
    return None


def _coords_from_axes(feature: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """(B, 2, H, W) channels x then y, from the values of one column `ys` (H,) and one
    row `xs` (W,): the grid every wrong version below shares with the right one."""
    b, _, h, w = feature.shape
    y, x = torch.meshgrid(ys.to(feature.dtype), xs.to(feature.dtype), indexing="ij")
    return torch.stack([x, y]).expand(b, 2, h, w)


def _coords_swapped(feature: Tensor) -> Tensor:
    return coord_features(feature).flip(1)


def _coords_from_zero(feature: Tensor) -> Tensor:
    return (coord_features(feature) + 1) / 2


def _coords_at_pixel_centres(feature: Tensor) -> Tensor:
    h, w = feature.shape[-2:]
    return _coords_from_axes(
        feature, (2 * torch.arange(h) + 1) / h - 1, (2 * torch.arange(w) + 1) / w - 1
    )


def _coords_without_endpoint(feature: Tensor) -> Tensor:
    h, w = feature.shape[-2:]
    return _coords_from_axes(feature, 2 * torch.arange(h) / h - 1, 2 * torch.arange(w) / w - 1)


def _coords_y_up(feature: Tensor) -> Tensor:
    x, y = coord_features(feature).unbind(1)  # (B, H, W) each
    return torch.stack([x, -y], dim=1)


def check_coord_features(fn: Callable[[Tensor], Tensor]) -> Callable:
    """Check ``fn(feature)``: CoordConv's two coordinate channels for a feature map.

    feature (B, C, H, W); returns (B, 2, H, W) in the feature's dtype: channel 0 is x,
    from -1 at the left column to 1 at the right one, channel 1 is y, from -1 at the
    top row to 1 at the bottom one, evenly spaced (torch.linspace(-1, 1, n)), the same
    for every image of the batch.
    """
    cases = _coord_cases()
    for case in cases:
        try:
            got = fn(*case.arguments())
        except Exception:  # a stub or a crash: run_check below reports it
            break
        problem = _coord_form_problem(got, *case.args)
        if problem is not None:
            print(f"coord_features: wrong on {case.description}:\n  {problem}")
            print("  The library's version is used below; solutions/ has a reference solution.")
            return coord_features
    return run_check(
        "coord_features",
        fn,
        coord_features,
        cases,
        {
            "are x and y swapped? Channel 0 is x (it varies along a row), channel 1 is y": (
                _coords_swapped
            ),
            "do the coordinates run from 0 to 1? CoordConv's run from -1 to 1": _coords_from_zero,
            "are they taken at pixel centres, (2j + 1) / W - 1? The library puts the first "
            "and last columns at exactly -1 and 1: torch.linspace(-1, 1, W)": (
                _coords_at_pixel_centres
            ),
            "is the last value missing, -1 + 2j / W (as with torch.arange or numpy's "
            "endpoint=False)? The last column should be at exactly 1: torch.linspace(-1, 1, W)": (
                _coords_without_endpoint
            ),
            "does y grow upwards? Image rows grow downwards: y is -1 on the top row": (
                _coords_y_up
            ),
        },
    )
