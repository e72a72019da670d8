import pytest

from terraseg.pipeline.prediction.graph import START, Slot, block_graph, last_uses


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 4), (4, 1), (3, 5), (7, 2)])
def test_every_node_comes_after_what_it_needs_and_each_block_is_inferred_once(rows, cols):
    nodes = block_graph(rows, cols)
    position = {node.id: k for k, node in enumerate(nodes)}
    assert len(position) == len(nodes)  # ids are unique
    for k, node in enumerate(nodes):
        assert all(position[dep] < k for dep in node.deps)
    blocks = {(i, j) for i in range(rows) for j in range(cols)}
    assert sorted(n.block for n in nodes if n.kind == "infer") == sorted(blocks)
    assert sorted(n.block for n in nodes if n.kind == "write") == sorted(blocks)
    last = last_uses(nodes)
    spill = [n for n in nodes if n.kind in ("right", "below")]
    assert all(n.id in last for n in spill)  # no spill is computed for nobody


def test_a_write_takes_its_neighbours_spill():
    nodes = {n.id: n for n in block_graph(3, 3)}
    write = nodes[("write", 1, 1)]
    assert write.args == (
        START, Slot.JOB, Slot.BLOCK, ("infer", 1, 1), ("right", 1, 0), ("below", 0, 1),
        ("below", 0, 0),
    )  # fmt: skip
    corner = nodes[("write", 0, 0)]
    assert corner.args[4:] == (None, None, None)


def live_peak(rows, cols):
    """Most results held at once by a driver that drops each after its last use."""
    nodes = block_graph(rows, cols)
    last = last_uses(nodes)
    live, peak = set(), 0
    for k, node in enumerate(nodes):
        if node.id in last:
            live.add(node.id)
        live -= {dep for dep in node.deps if last[dep] == k}
        peak = max(peak, len(live))
    return peak


def test_results_held_depend_on_raster_width_not_height():
    assert live_peak(40, 4) == live_peak(4, 4)
    assert live_peak(4, 8) > live_peak(4, 4)
