"""`solo_lib.data_report` and `python -m solo_lib analyse`, on hand-made objects.

Most tests use a 128 x 128 input: the scale ranges are the paper's times 128 / 800,
level 0 [0.16, 15.36], level 1 [7.68, 30.72], level 2 [15.36, 61.44], ...; levels 0
and 1 have stride 8 and 32 x 32 masks (4 x 4 input pixels per mask pixel).
"""

import re

import pytest
import torch

from solo_lib.cli import main
from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule, write_coco_dataset
from solo_lib.data_report import analyse_dataset, format_report, object_sizes
from solo_lib.paths import REPO_ROOT
from solo_lib.targets import objects_without_cells


def _config(grid: int) -> SOLOConfig:
    return SOLOConfig.cpu().replace(image_size=(128, 128), num_grids=(grid,) * 5)


def _target(*squares: tuple[int, int, int, int], size=(128, 128)) -> dict:
    """Objects (label, top, left, side): square masks with their boxes."""
    masks = torch.zeros(len(squares), *size, dtype=torch.uint8)
    boxes = torch.zeros(len(squares), 4)
    for i, (_, top, left, side) in enumerate(squares):
        masks[i, top : top + side, left : left + side] = 1
        boxes[i] = torch.tensor([left, top, left + side, top + side])
    labels = torch.tensor([label for label, *_ in squares], dtype=torch.int64)
    return {"boxes": boxes, "labels": labels, "masks": masks}


# Two 8 px squares of class 1, centres (20, 20) and (36, 36): size 8, in the ranges of
# levels 0 and 1, 2 x 2 mask pixels there. A 2 x 2 grid (64 px cells) puts both in
# cell (0, 0) of each level: equal areas, the later object wins every cell. A 3 x 3
# grid (42.7 px) too; a 4 x 4 grid (32 px) separates them: cells (0, 0) and (1, 1).
PAIR = ((1, 16, 16, 8), (1, 32, 32, 8))


def test_same_class_objects_in_one_cell_collide_at_a_coarse_grid():
    target = _target(*PAIR)
    report = analyse_dataset([(None, target)], _config(2), proposal_images=0)
    assert (report.num_images, report.num_objects) == (1, 2)
    assert [lv.in_range for lv in report.levels] == [2, 2, 0, 0, 0]
    assert [lv.with_cells for lv in report.levels] == [1, 1, 0, 0, 0]
    assert [lv.min_mask_pixels for lv in report.levels[:2]] == [4, 4]
    assert report.lost_to_same_class == 1  # the first square: every cell to the second
    assert (report.without_cells, report.crowded_out) == (1, 1)
    assert (report.outside_ranges, report.masks_vanish) == (0, 0)
    assert report.without_cells == int(objects_without_cells(target, _config(2)).sum())

    other_class = _target(PAIR[0], (2, *PAIR[1][1:]))
    report = analyse_dataset([(None, other_class)], _config(2), proposal_images=0)
    assert (report.lost_to_same_class, report.without_cells) == (0, 1)


def test_a_doubled_grid_separates_them():
    report = analyse_dataset([(None, _target(*PAIR))], _config(4), proposal_images=0)
    assert [lv.with_cells for lv in report.levels] == [2, 2, 0, 0, 0]
    assert (report.lost_to_same_class, report.without_cells) == (0, 0)


def test_the_proposal_picks_the_grid_that_separates_them():
    empty = _target()  # an image without objects counts as an image, adds no object
    data = [(None, _target(*PAIR)), (None, empty)]
    proposal = analyse_dataset(data, _config(2), min_mask_pixels=4).proposal
    tried = [(c.image_size, c.num_grids[0], c.without_cells) for c in proposal.tried]
    assert tried == [((128, 128), 2, 1), ((128, 128), 3, 1), ((128, 128), 4, 0)]
    assert proposal.chosen.meets and proposal.num_images == 2

    # 16 mask pixels need the input doubled: the squares become 16 px, 4 x 4 mask pixels
    # (1.25 x and 1.5 x give 10 and 12 px squares, at most 3 x 3); the grids as above.
    proposal = analyse_dataset(data, _config(2)).proposal
    tried = [(c.image_size[0], c.num_grids[0], c.small_mask_pixels) for c in proposal.tried]
    assert [(size, grid) for size, grid, _ in tried] == [
        (128, 2),
        (160, 2),
        (192, 2),
        (256, 2),
        (256, 3),
        (256, 4),
    ]
    assert all(pixels < 16 for size, _, pixels in tried if size < 256)
    assert proposal.chosen.image_size == (256, 256) and proposal.chosen.num_grids == (4,) * 5
    assert proposal.chosen.small_mask_pixels == 16 and proposal.chosen.meets
    text = format_report(analyse_dataset(data, _config(2)))
    assert "proposed: --model.config.image_size '[256, 256]'" in text
    assert "--model.config.num_grids '[4, 4, 4, 4, 4]'" in text


def test_finer_strides_only_when_no_input_gives_the_pixels():
    # 40 mask pixels: at stride 8 (4 input px per mask px) even the tripled input gives
    # 24 px squares, 6 x 6 = 36. With levels 0 and 1 at stride 4 (2 input px per mask
    # px): 16 at 1x, 25 at 1.25x, 36 at 1.5x, 8 x 8 = 64 at 2x; then the grids as above.
    data = [(None, _target(*PAIR))]
    proposal = analyse_dataset(data, _config(2), min_mask_pixels=40).proposal
    tried = [(c.image_size[0], c.strides[0], c.num_grids[0]) for c in proposal.tried]
    assert tried == [
        *[(size, 8, 2) for size in (128, 160, 192, 256, 384)],
        *[(size, 4, 2) for size in (128, 160, 192, 256)],
        (256, 4, 3),
        (256, 4, 4),
    ]
    assert [c.small_mask_pixels for c in proposal.tried[5:9]] == [16, 25, 36, 64]
    assert proposal.chosen.strides == (4, 4, 16, 32, 32) and proposal.chosen.meets

    report = analyse_dataset(data, _config(2), min_mask_pixels=1000)
    assert not report.proposal.chosen.meets
    assert "no candidate meets the needs; the closest" in format_report(report)


def test_mask_pixels_of_a_known_square():
    # 12 px square at [2, 14): mask blocks [0, 4) and [12, 16) are half covered per axis,
    # so the 4 corner blocks (1/4) drop, the 8 edge blocks (1/2) stay: 16 - 4 = 12 pixels
    # on levels 0 and 1 (size 12 is in both ranges, not in level 2's).
    report = analyse_dataset([(None, _target((3, 2, 2, 12)))], _config(2), proposal_images=0)
    assert [lv.min_mask_pixels for lv in report.levels] == [12, 12, None, None, None]
    assert report.levels[0].p5_mask_pixels == 12 and report.small_mask_pixels == 12
    assert report.sizes["min"] == report.sizes["max"] == 12
    assert report.without_cells == 0


def test_object_sizes_are_the_sizes_the_report_measures():
    """Hand-derived: an 8 px square is 8, a 4 x 9 box sqrt(36) = 6, a 12 px square 12; in
    data set order, and the report's min and max are the same numbers."""
    rect = _target((1, 0, 0, 4))
    rect["boxes"] = torch.tensor([[10.0, 20.0, 14.0, 29.0]])  # w 4, h 9
    dataset = [(None, _target(PAIR[0], (2, 40, 40, 12))), (None, rect), (None, _target())]
    sizes = object_sizes(dataset)
    assert sizes.dtype == torch.float64
    assert sizes.tolist() == [8.0, 12.0, 6.0]
    report = analyse_dataset(dataset[:2], _config(2), proposal_images=0)
    assert (report.sizes["min"], report.sizes["max"]) == (6.0, 12.0)
    assert object_sizes([]).shape == (0,)


def test_a_mask_that_vanishes_and_a_size_outside_every_range():
    # 2 px square at [1, 3): a quarter of one mask block, so empty at level 0, its only
    # level. A degenerate box (zero width: size 0) is below every range.
    vanishing = _target((1, 1, 1, 2))
    degenerate = _target((2, 40, 40, 4))
    degenerate["boxes"][0, 2] = degenerate["boxes"][0, 0]
    data = [(None, vanishing), (None, degenerate)]
    report = analyse_dataset(data, _config(2), proposal_images=0)
    assert (report.masks_vanish, report.outside_ranges) == (1, 1)
    assert (report.without_cells, report.crowded_out) == (2, 0)
    assert report.levels[0].in_range == 1 and report.levels[0].min_mask_pixels == 0
    assert report.sizes["min"] == 0 and report.sizes["max"] == 2
    expected = sum(int(objects_without_cells(t, _config(2)).sum()) for _, t in data)
    assert report.without_cells == expected
    text = format_report(report)
    assert "objects in no scale range:                          1 (50.0 %)" in text
    assert "objects whose mask vanishes on all their levels:    1 (50.0 %)" in text


def test_a_data_set_without_objects_is_refused():
    with pytest.raises(ValueError, match="no objects"):
        analyse_dataset([(None, _target())], _config(2))


class _Squares:
    """Two 256 x 352 images (the cpu preset's input: no resizing) with square objects."""

    class_names = ("vehicle", "person", "animal")
    images = (
        ((2, 0, 0, 16), (2, 0, 16, 16)),  # two persons side by side
        ((1, 50, 50, 100), (3, 201, 201, 2)),  # a large vehicle, a 2 px animal
    )

    def __len__(self) -> int:
        return len(self.images)

    def load_raw(self, i: int) -> tuple[torch.Tensor, dict]:
        target = _target(*self.images[i], size=(256, 352))
        return torch.zeros(3, 256, 352, dtype=torch.uint8), target


def _analyse_squares(tmp_path) -> list[str]:
    """`analyse` arguments for `_Squares` written as a COCO set, all images, cpu preset."""
    image_dir, annotation_file = write_coco_dataset(_Squares(), tmp_path / "coco")
    return [
        "analyse",
        "--config",
        str(REPO_ROOT / "solo_lib" / "configs" / "cpu.yaml"),
        "--data.format=coco",
        f"--data.root={image_dir}",
        f"--data.annotation_file={annotation_file}",
        "--split=all",
    ]


def test_cli_analyse_prints_the_report_of_a_coco_set(tmp_path, capsys):
    """cpu preset: grids 16 12 8 6 4 on 256 x 352; 64 x 88 masks on levels 0-1, 32 x 44 on 2,
    16 x 22 on 3-4; ranges level 0 [0.32, 30.72], 1 [15.36, 61.44], 2 [30.72, 122.88],
    3 [61.44, 245.76].

    The persons (16 px, levels 0 and 1, 4 x 4 mask pixels), centres x 8 and 24, share
    cell (0, 0) of level 1 (29.3 px columns), not of level 0 (22 px): the first loses
    one cell to its class, and keeps one. The vehicle (100 px at [50, 150)): 13 x 13 mask
    pixels on level 2 (8 px blocks, 6/8 covered at each edge), 6 x 6 on level 3 (16 px
    blocks: the first 14/16, the last 6/16). The animal (2 px) vanishes on level 0.
    """
    main(_analyse_squares(tmp_path))
    out = capsys.readouterr().out
    assert "all images: 2 images, 4 objects, input 256x352 (H x W)" in out
    assert "min 2.0  p5 4.1  p25 12.5  median 16.0  p75 37.0  p95 87.4  max 100.0" in out
    rows = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    # level stride grid range mask in-range own-cells px-min px-p5
    assert [row[5:] for row in rows[:5]] == [
        ["3", "2", "0", "1.6"],
        ["2", "1", "16", "16"],
        ["1", "1", "169", "169"],
        ["1", "1", "36", "36"],
        ["0", "0", "-", "-"],
    ]
    assert "lose a cell to one of their class:     1 (25.0 %)" in out
    assert "own no cell (objects_without_cells):   1 (25.0 %)" in out
    assert "mask pixels of the small objects (p5, best level):  2.4" in out
    # The animal needs the input tripled (6 px, one mask pixel); there, the p5 of
    # [1, 144, 144, ...] mask pixels is 22.45 and every object owns a cell.
    assert "proposed: --model.config.image_size '[768, 1056]'" in out
    assert "--model.config.num_grids '[16, 12, 8, 6, 4]'" in out


def test_cli_min_mask_pixels_sets_the_proposals_need(tmp_path, capsys):
    """With 1 mask pixel enough, only the 2 px animal decides: its mask vanishes (1 of 4
    objects without a cell, more than 1 %). Finer grids do not bring it back, nor does
    1.25x the input (2.5 px); 1.5x does (3 px, three quarters of a 4 px mask block)."""
    main([*_analyse_squares(tmp_path), "--min_mask_pixels=1"])
    out = capsys.readouterr().out
    assert "small objects >= 1 mask px" in out
    assert "proposed: --model.config.image_size '[384, 544]'" in out
    assert "--model.config.num_grids '[16, 12, 8, 6, 4]'" in out


def test_cli_analyse_says_what_it_does_on_stderr_and_prints_the_report_alone_on_stdout(
    tmp_path, capsys
):
    """Issue 28: a status line and tqdm bars (images, then candidate settings) on stderr;
    stdout holds the report that `analyse_dataset` makes of the same images, and the time."""
    args = [*_analyse_squares(tmp_path), "--proposal_images=1"]
    main(args)
    out, err = capsys.readouterr()

    options = dict(arg.removeprefix("--data.").split("=", 1) for arg in args if "=" in arg)
    cfg = SOLOConfig.cpu()
    data = SOLODataModule(
        cfg, format="coco", root=options["root"], annotation_file=options["annotation_file"]
    )
    report = analyse_dataset(data._dataset(train=False), cfg, proposal_images=1)
    expected = f"all images: {format_report(report)}\n"
    assert out.startswith(expected)
    assert re.fullmatch(r"analysed in \d+\.\d s\n", out[len(expected) :])

    # 5 inputs (x 1, 1.25, 1.5, 2, 3) x 4 grid factors x 2 strides (as they are, finer)
    status = (
        f"analyse: measuring the objects of 2 images (all images of "
        f"{options['annotation_file']}, read as fit reads them) at the input 256x352 with "
        "grids 16 12 8 6 4; then, for a proposal, up to 40 larger inputs and finer grids "
        "on 1 of them"
    )
    assert status in err.splitlines()
    bars = err.replace("\r", "\n")
    assert "analysing at 256x352: 100%" in bars
    assert "proposal 1/40: 256x352, grids 16 12 8 6 4: 100%" in bars
