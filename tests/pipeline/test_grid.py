from itertools import pairwise

import pytest

from terraseg.pipeline.grid import Window, axis_offsets, plan_blocks, plan_tiles


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (512, 512, 0, [0]),
        (100, 512, 128, [0]),  # smaller than a tile: one tile, reflected by the reader
        (1000, 512, 0, [0, 488]),  # last tile shifted inward, never padded
        (1024, 512, 128, [0, 384, 512]),
        (1100, 256, 64, [0, 192, 384, 576, 768, 844]),
    ],
)
def test_axis_offsets(length, tile, overlap, expected):
    assert axis_offsets(length, tile, overlap) == expected


@pytest.mark.parametrize("length", [1, 255, 256, 257, 700, 1023, 4097])
@pytest.mark.parametrize(("tile", "overlap"), [(256, 0), (256, 64), (100, 99)])
def test_tiles_cover_axis_and_stay_inside(length, tile, overlap):
    offsets = axis_offsets(length, tile, overlap)
    size = min(tile, length)
    assert offsets[0] == 0
    assert offsets[-1] + size == length  # the last partial row/column is covered
    assert all(b > a for a, b in pairwise(offsets))
    assert all(b - a <= tile - overlap for a, b in pairwise(offsets))


def test_plan_tiles_non_square_and_small():
    tiles = plan_tiles((300, 1000), 512, 64)
    assert [t.col_off for t in tiles] == [0, 448, 488]
    assert {t.shape for t in tiles} == {(300, 512)}


def test_plan_blocks_partition_the_raster():
    blocks = plan_blocks((1000, 700), 256)
    assert sum(b.height * b.width for b in blocks) == 1000 * 700
    assert blocks[-1] == Window(768, 512, 232, 188)


def test_window_arithmetic():
    w = Window(10, 20, 30, 40)
    assert w.intersection(Window(0, 0, 15, 25)) == Window(10, 20, 5, 5)
    assert w.intersection(Window(100, 100, 1, 1)) is None
    assert w.grow(15, (35, 1000)) == Window(0, 5, 35, 70)
    assert Window(12, 25, 2, 2).relative_to(w) == Window(2, 5, 2, 2)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="overlap"):
        axis_offsets(100, 10, 10)
    with pytest.raises(ValueError, match="positive"):
        axis_offsets(0, 10)
