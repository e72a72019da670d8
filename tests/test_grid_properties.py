"""The one tile grid, checked over raster sizes a user meets: 1 x 1 to thousands, odd, prime.

Prediction through the real block graph equals whole-raster inference of a
translation-equivariant stand-in; tiling windows, vectorize blocks and prediction
interiors each cover every pixel exactly once, and tiles cover every pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terraseg.pipeline.grid import plan_blocks, plan_tiles
from terraseg.pipeline.prediction.blocks import (
    accumulate_block,
    below_spill,
    class_map,
    finish_block,
    right_spill,
)
from terraseg.pipeline.prediction.graph import Slot, block_graph, run_in_order
from terraseg.pipeline.prediction.plan import PredictionPlan

CLASSES = 4
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def standin():
    """A translation-equivariant fully convolutional net: receptive radius 2, no pooling."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, CLASSES, 3, padding=1),
    ).eval()

    def predict(batch):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(np.ascontiguousarray(batch))), dim=1).numpy()

    return predict


PREDICT = standin()


@st.composite
def grids(draw, largest):
    tile = draw(st.sampled_from([24, 32, 48, 64]))
    overlap = draw(st.integers(8, tile // 2 - 1))  # a guard of overlap // 4 >= the radius 2
    return {
        "shape": (draw(st.integers(1, largest)), draw(st.integers(1, largest))),
        "tile": tile,
        "overlap": overlap,
        "block": draw(st.integers(8, 2 * largest)),
    }


def run_graph(image, grid):
    """Run the block graph in order (results dropped after their last use); the file
    tasks are replaced by in-memory ones over ``image`` and the stand-in."""
    plan = PredictionPlan.build(image.shape[1:], grid["tile"], grid["overlap"], grid["block"])
    probs = np.zeros((CLASSES, *plan.shape), np.float32)
    classes = np.zeros(plan.shape, np.uint8)

    def read(_, block):
        rows, cols = plan.extent(*block).slices()
        return image[:, rows, cols]

    def infer(_, block, pixels):
        return accumulate_block(plan, block, pixels, np.ones(pixels.shape[1:], bool), PREDICT,
                                num_classes=CLASSES, tile=grid["tile"], overlap=grid["overlap"],
                                window="spline", batch_size=5)  # fmt: skip

    def write(_, __, block, parts, left, up, up_left):
        total = finish_block(
            parts.own, left, up[0] if up else None, up_left[1] if up_left else None
        )
        c, p = class_map(total)
        rows, cols = plan.interior(*block).slices()
        classes[rows, cols], probs[:, rows, cols] = c, p
        return 1

    tasks = {"start": lambda _: None, "read": read, "infer": infer, "right": right_spill,
             "below": below_spill, "write": write}  # fmt: skip
    writes = []

    def call(node, args):
        args = [grid if a is Slot.JOB else node.block if a is Slot.BLOCK else a for a in args]
        result = tasks[node.kind](*args)
        writes.extend([node.block] if node.kind == "write" else [])
        return result

    run_in_order(block_graph(plan.rows.count, plan.cols.count), call)
    assert sorted(writes) == sorted(plan.blocks)  # every block written once
    return classes, probs


def whole_raster(image, tile):
    """The stand-in over the whole raster; an axis shorter than a tile is reflected up to it."""
    rows, cols = image.shape[1:]
    padded = np.pad(image, ((0, 0), (0, max(0, tile - rows)), (0, max(0, tile - cols))),
                    mode="symmetric")  # fmt: skip
    return PREDICT(padded[None])[0][:, :rows, :cols]


def check_prediction(grid):
    rng = np.random.default_rng(sum(grid["shape"]))
    image = rng.normal(size=(3, *grid["shape"])).astype(np.float32)
    _, blended = run_graph(image, grid)
    np.testing.assert_allclose(blended, whole_raster(image, grid["tile"]), atol=2e-5)


@FAST
@given(grids(largest=160))
def test_prediction_equals_whole_raster_inference(grid):
    check_prediction(grid)


@pytest.mark.slow
@MANY
@given(grids(largest=700))
def test_prediction_equals_whole_raster_inference_many_sizes(grid):
    check_prediction(grid)


def coverage(shape, windows):
    count = np.zeros(shape, np.int32)
    for w in windows:
        assert w.row_off >= 0 and w.row_end <= shape[0] and w.col_off >= 0 and w.col_end <= shape[1]
        count[w.slices()] += 1
    return count


def check_coverage(shape, tile, overlap, block):
    tiles = plan_tiles(shape, tile, overlap)
    assert coverage(shape, tiles).min() >= 1  # tiles reach every pixel
    assert (coverage(shape, plan_blocks(shape, block)) == 1).all()  # tile tasks, vectorize blocks
    plan = PredictionPlan.build(shape, tile, overlap, block)
    interiors = [plan.interior(*b) for b in plan.blocks]
    assert (coverage(shape, interiors) == 1).all()
    owned = [t for b in plan.blocks for t in plan.tiles(*b)]
    assert sorted((t.row_off, t.col_off) for t in owned) == sorted(
        (t.row_off, t.col_off) for t in tiles
    )  # each tile inferred by exactly one block


sizes = st.integers(1, 3000)


@settings(max_examples=60, deadline=None)
@given(
    sizes, sizes, st.sampled_from([16, 64, 256, 512]), st.integers(0, 127), st.integers(16, 4096)
)
def test_every_pixel_is_covered_exactly_once(rows, cols, tile, overlap, block):
    check_coverage((rows, cols), tile, min(overlap, tile // 2 - 1), block)


@pytest.mark.parametrize(
    ("rows", "cols"), [(1536, 768), (768, 1536), (349, 352), (1, 1), (7919, 3)]
)
def test_sizes_seen_in_real_data(rows, cols):
    check_coverage((rows, cols), 512, 128, 1024)
