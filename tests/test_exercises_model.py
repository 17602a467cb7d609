"""The check of notebook 03's CoordConv exercise: it passes the reference solution, names
the common mistakes, reports wrong shapes and dtypes with the expected form, and falls
back to the library for stubs."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor

from solo_lib import exercises
from solo_lib.model.heads import coord_features
from solo_lib.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "solutions"))
import model as solution_model  # noqa: E402


def _grid(feature: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """(B, 2, H, W) channels x then y from one column of y values (H,) and one row of x (W,)."""
    b, _, h, w = feature.shape
    y, x = torch.meshgrid(ys.to(feature.dtype), xs.to(feature.dtype), indexing="ij")
    return torch.stack([x, y]).expand(b, 2, h, w)


def _linspaces(feature: Tensor) -> tuple[Tensor, Tensor]:
    h, w = feature.shape[-2:]
    return torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)


def test_the_reference_solution_passes_and_is_used(capsys):
    assert exercises.check_coord_features(solution_model.my_coord_features) is (
        solution_model.my_coord_features
    )
    assert "coord_features: correct on all 5 cases" in capsys.readouterr().out


def test_the_solution_is_the_librarys_on_a_non_square_batch():
    feature = torch.randn(3, 4, 5, 7)
    torch.testing.assert_close(solution_model.my_coord_features(feature), coord_features(feature))


def test_a_stub_is_not_attempted_and_the_library_is_used(capsys):
    def stub(feature):
        raise NotImplementedError

    assert exercises.check_coord_features(stub) is coord_features
    out = capsys.readouterr().out
    assert "coord_features: not attempted yet: the library's version is used below" in out


def test_a_crash_is_reported_with_the_case(capsys):
    def broken(feature):
        return torch.linspace(-1, 1, feature.shape[-1]) @ feature  # W against the channels

    assert exercises.check_coord_features(broken) is coord_features
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "hand-made (1, 4, 3, 5)" in out


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda f: coord_features(f)[:, [1, 0]], "are x and y swapped?"),
        (lambda f: (coord_features(f) + 1) / 2, "do the coordinates run from 0 to 1?"),
        (
            lambda f: _grid(
                f,
                (2 * torch.arange(f.shape[-2]) + 1) / f.shape[-2] - 1,
                (2 * torch.arange(f.shape[-1]) + 1) / f.shape[-1] - 1,
            ),
            "are they taken at pixel centres",
        ),
        (
            lambda f: _grid(
                f,
                torch.linspace(-1, 1, f.shape[-2] + 1)[:-1],
                torch.linspace(-1, 1, f.shape[-1] + 1)[:-1],
            ),
            "is the last value missing",
        ),
        (lambda f: _grid(f, -_linspaces(f)[0], _linspaces(f)[1]), "does y grow upwards?"),
    ],
)
def test_common_value_mistakes_are_named(wrong, hint, capsys):
    assert exercises.check_coord_features(wrong) is coord_features
    out = capsys.readouterr().out
    assert "Your values match a common mistake" in out and hint in out


def test_channels_not_expanded_over_the_batch_are_named_with_the_expected_shape(capsys):
    def one_copy(feature):
        return coord_features(feature)[:1]  # (1, 2, H, W) whatever the batch

    assert exercises.check_coord_features(one_copy) is coord_features
    out = capsys.readouterr().out
    assert "wrong on a batch of 3 non-square" in out
    assert "expected shape (B, 2, H, W) = (3, 2, 5, 7)" in out and "got (1, 2, 5, 7)" in out
    assert "are the channels expanded over the batch?" in out


def test_a_missing_batch_dimension_is_named_on_the_first_case(capsys):
    exercises.check_coord_features(lambda f: coord_features(f)[0])  # (2, H, W)
    out = capsys.readouterr().out
    assert "expected shape (B, 2, H, W) = (1, 2, 3, 5)" in out and "got (2, 3, 5)" in out
    assert "is the batch dimension missing?" in out


def test_swapped_height_and_width_are_a_shape_mistake_with_a_hint(capsys):
    def xy_indexing(feature):
        ys, xs = _linspaces(feature)
        y, x = torch.meshgrid(ys, xs, indexing="xy")  # (W, H) grids
        return torch.stack([x, y]).expand(feature.shape[0], 2, *x.shape)

    assert exercises.check_coord_features(xy_indexing) is coord_features
    out = capsys.readouterr().out
    assert "got (1, 2, 5, 3)" in out and "are H and W swapped?" in out


def test_channels_last_are_named(capsys):
    exercises.check_coord_features(lambda f: coord_features(f).permute(0, 2, 3, 1))
    assert "are the channels last?" in capsys.readouterr().out


def test_a_float32_result_for_a_float64_feature_is_a_dtype_mistake(capsys):
    def always_float32(feature):
        return coord_features(feature.float())

    assert exercises.check_coord_features(always_float32) is coord_features
    out = capsys.readouterr().out
    assert "wrong on a float64 (2, 1, 6, 4) feature map" in out
    assert "expected dtype torch.float64" in out and "got torch.float32" in out


def test_a_list_is_reported_with_the_expected_form(capsys):
    exercises.check_coord_features(lambda f: coord_features(f).tolist())
    out = capsys.readouterr().out
    assert "expected a torch.Tensor of shape (B, 2, H, W) = (1, 2, 3, 5)" in out and "list" in out
