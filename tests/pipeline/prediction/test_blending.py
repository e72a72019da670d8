from itertools import product

import numpy as np
import pytest
import torch

from terraseg.pipeline.grid import axis_offsets
from terraseg.pipeline.prediction.blending import (
    BLEND_WINDOWS,
    guard_width,
    profile,
    ramp,
    tile_weights,
)
from terraseg.pipeline.prediction.blocks import accumulate_block, class_map, finish_block
from terraseg.pipeline.prediction.plan import PredictionPlan


@pytest.mark.parametrize("kind", list(BLEND_WINDOWS))
@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(200, 64, 16), (64, 64, 16), (1000, 256, 64), (97, 32, 8)]
)
def test_every_pixel_is_covered_and_border_tiles_do_not_fade(kind, length, tile, overlap):
    total = np.zeros(length)
    for offset in axis_offsets(length, tile, overlap):
        weights = profile(min(tile, length), overlap, kind, offset > 0, offset + tile < length)
        total[offset : offset + tile] += weights
    assert total.min() > 0.3
    first = profile(tile, overlap, kind, fade_start=False, fade_end=True)
    assert first[0] == 1.0 and first[-1] == 0.0  # no fade on the raster border, guard inside


def test_ramp_has_a_zero_guard_then_rises():
    edge = ramp(32, "spline")
    guard = guard_width(32)
    assert guard == 8 and (edge[:guard] == 0).all()
    assert (np.diff(edge[guard:]) > 0).all() and 0.99 < edge[-1] <= 1.0
    with pytest.raises(ValueError, match="unknown window 'cosine'"):
        ramp(32, "cosine")


def test_tile_weights_is_outer_product():
    w = tile_weights((0, 40), (64, 64), (64, 200), 16, "hann")
    assert w.shape == (64, 64)
    assert (w[:, -1] == 0).all() and (w[:, 0] == 0).all()  # left and right neighbours exist
    assert w[0, 32] == w[-1, 32] == 1.0  # top and bottom are raster border


def test_plan_infers_every_tile_once_and_spills_only_forward():
    plan = PredictionPlan.build((2100, 1000), 512, 128, 1024)
    tiles = [t for b in plan.blocks for t in plan.tiles(*b)]
    assert len(tiles) == len(set(tiles)) == len(plan.rows.offsets) * len(plan.cols.offsets)
    for i, j in plan.blocks:
        extent, interior = plan.extent(i, j), plan.interior(i, j)
        assert extent.row_off == interior.row_off and extent.col_off == interior.col_off
        assert extent.row_end <= plan.rows.bounds[min(i + 2, plan.rows.count)]
        assert all(extent.intersection(t) == t for t in plan.tiles(i, j))


def standin():
    """A translation-equivariant fully convolutional net: receptive radius 2, no pooling."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)
    ).eval()

    def predict(batch):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(batch)), dim=1).numpy()

    return predict


def blend(image, valid, predict, *, tile, overlap, block, window="spline", batch_size=3):
    plan = PredictionPlan.build(image.shape[1:], tile, overlap, block)
    parts = {}
    for b in plan.blocks:
        rows, cols = plan.extent(*b).slices()
        parts[b] = accumulate_block(
            plan,
            b,
            image[:, rows, cols],
            valid[rows, cols],
            predict,
            num_classes=4,
            tile=tile,
            overlap=overlap,
            window=window,
            batch_size=batch_size,
        )
    probs = np.zeros((4, *image.shape[1:]), np.float32)
    classes = np.zeros(image.shape[1:], np.uint8)
    for i, j in plan.blocks:

        def spill(key, name):
            return getattr(parts[key], name) if key in parts else None

        total = finish_block(
            parts[(i, j)].own,
            spill((i, j - 1), "right"),
            spill((i - 1, j), "down"),
            spill((i - 1, j - 1), "diagonal"),
        )
        c, p = class_map(total)
        rows, cols = plan.interior(i, j).slices()
        probs[:, rows, cols], classes[rows, cols] = p, c
    return classes, probs


@pytest.mark.parametrize(
    ("shape", "block", "window"),
    product([(150, 230), (97, 64)], [40, 64, 1000], ["spline", "flat"]),
)
def test_blending_equals_whole_raster_for_an_equivariant_model(shape, block, window):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, *shape)).astype(np.float32)
    predict = standin()
    whole = predict(image[None])[0]
    _, blended = blend(
        image, np.ones(shape, bool), predict, tile=32, overlap=16, block=block, window=window
    )
    np.testing.assert_allclose(blended, whole, atol=1e-5)


def test_block_size_does_not_change_the_result_bitwise():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(3, 130, 170)).astype(np.float32)
    valid = np.ones((130, 170), bool)
    reference = blend(image, valid, standin(), tile=32, overlap=8, block=1000)
    for block in (24, 48, 72):
        result = blend(image, valid, standin(), tile=32, overlap=8, block=block)
        np.testing.assert_allclose(result[1], reference[1], atol=1e-6)
        np.testing.assert_array_equal(result[0], reference[0])


def test_nodata_gets_no_weight_and_ignore_class():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(3, 80, 80)).astype(np.float32)
    valid = np.ones((80, 80), bool)
    valid[10:20, 30:50] = False
    classes, probs = blend(image, valid, standin(), tile=32, overlap=8, block=40)
    assert (classes[~valid] == 255).all() and (classes[valid] < 4).all()
    assert (probs[:, ~valid] == 0).all()


def test_raster_smaller_than_tile_is_reflected():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(3, 20, 27)).astype(np.float32)
    predict = standin()
    _, probs = blend(image, np.ones((20, 27), bool), predict, tile=32, overlap=8, block=64)
    padded = np.pad(image, ((0, 0), (0, 12), (0, 5)), mode="symmetric")
    expected = predict(padded[None])[0][:, :20, :27]
    np.testing.assert_allclose(probs, expected, atol=1e-6)


@pytest.mark.parametrize("width", [1, 7, 300])
def test_first_argmax_matches_numpy_with_ties_and_uncovered_pixels(width, monkeypatch):
    from terraseg.pipeline.prediction import blocks

    monkeypatch.setattr(blocks, "ARGMAX_CHUNK", 2 * width + 1)  # several chunks, a short last one
    rng = np.random.default_rng(width)
    scores = rng.integers(0, 4, (6, 23, width)).astype(np.float32)  # many exact ties
    weights = rng.random((23, width), dtype=np.float32)
    weights[rng.random((23, width)) < 0.2] = 0
    expected = np.where(weights > 0, scores.argmax(axis=0), 255).astype(np.uint8)
    np.testing.assert_array_equal(blocks.first_argmax(scores, weights), expected)


def test_class_map_probabilities_are_normalized_and_zero_where_uncovered():
    from terraseg.pipeline.prediction.blocks import Accumulator

    rng = np.random.default_rng(0)
    weights = rng.random((9, 11), dtype=np.float32)
    weights[2:4] = 0
    probs = rng.random((3, 9, 11), dtype=np.float32) * weights
    classes, normalized = class_map(Accumulator(probs, weights))
    assert normalized is not None
    covered = weights > 0
    np.testing.assert_array_equal(normalized[:, covered], probs[:, covered] / weights[covered])
    assert (normalized[:, ~covered] == 0).all()
    np.testing.assert_array_equal(classes[covered], normalized.argmax(axis=0)[covered])
    assert (classes[~covered] == 255).all()
    unnormalized, none = class_map(Accumulator(probs, weights), probabilities=False)
    assert none is None
    np.testing.assert_array_equal(unnormalized[covered], probs.argmax(axis=0)[covered])


def test_blocks_round_to_the_stride_and_shrink_for_small_rasters():
    from terraseg.pipeline.prediction.plan import AxisPlan

    # 1024 rounds to 1152 (3 strides of 384); the 640-px last block keeps its tiles
    assert AxisPlan(4096, 512, 128, 1024).bounds == [0, 1152, 2304, 3456, 4096]
    # 5 tiles would make 2 blocks of 1152: 3 blocks of 2, 2 and 1 tiles instead
    small = AxisPlan(2048, 512, 128, 1024)
    assert small.bounds == [0, 768, 1536, 2048]
    assert [len(small.tiles_of(i)) for i in range(small.count)] == [2, 2, 1]
    # never less than a tile apart
    assert AxisPlan(600, 512, 128, 1024).bounds == [0, 600]
    assert AxisPlan(1000, 512, 128, 100).bounds == [0, 1000]
