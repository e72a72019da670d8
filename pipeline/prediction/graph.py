"""The block graph of one raster's prediction: which task needs which, as data.

For a plan of ``rows`` x ``cols`` blocks the graph holds, in row-major block
order: one ``start`` (the scratch store), and per block a ``read`` (its extent's
pixels; no accelerator needed, so on a GPU worker it overlaps another block's
inference), an ``infer`` (its tiles, each inferred exactly once), a ``right``
and a ``below`` spill picker where a neighbour consumes them, and a ``write``
that completes and stores the block's interior from its own accumulators and the
spill of its left, upper and upper-left neighbours. Every node comes after the
nodes it needs, so running the list in order is a valid schedule, in one process
or on a cluster.

:func:`last_uses` tells a driver when it may drop a node's result: with row-major
order, spill lives for at most one block row, so memory depends on block size and
raster width, never on raster height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

NodeKind = Literal["start", "read", "infer", "right", "below", "write"]
NodeId = tuple[NodeKind, int, int]
START: NodeId = ("start", 0, 0)


class Slot(Enum):
    """Arguments that are not results of other nodes."""

    JOB = "job"
    BLOCK = "block"


Arg = NodeId | Slot | None  # None: no such neighbour


@dataclass(frozen=True)
class Node:
    """One task: its kind, its block and its arguments in call order."""

    kind: NodeKind
    block: tuple[int, int]
    args: tuple[Arg, ...]

    @property
    def id(self) -> NodeId:
        """The node's identity (kind, block row, block column)."""
        return (self.kind, *self.block)

    @property
    def deps(self) -> list[NodeId]:
        """The nodes whose results this one takes."""
        return [a for a in self.args if isinstance(a, tuple)]


def block_graph(rows: int, cols: int) -> list[Node]:
    """The nodes of a ``rows`` x ``cols`` block plan, each after the nodes it needs."""
    nodes = [Node("start", (0, 0), (Slot.JOB,))]
    for i in range(rows):
        for j in range(cols):
            read: NodeId = ("read", i, j)
            infer: NodeId = ("infer", i, j)
            nodes.append(Node("read", (i, j), (Slot.JOB, Slot.BLOCK)))
            nodes.append(Node("infer", (i, j), (Slot.JOB, Slot.BLOCK, read)))
            if j + 1 < cols:
                nodes.append(Node("right", (i, j), (infer,)))
            if i + 1 < rows:
                nodes.append(Node("below", (i, j), (infer,)))
            left: Arg = ("right", i, j - 1) if j > 0 else None
            up: Arg = ("below", i - 1, j) if i > 0 else None
            up_left: Arg = ("below", i - 1, j - 1) if i > 0 and j > 0 else None
            args = (START, Slot.JOB, Slot.BLOCK, infer, left, up, up_left)
            nodes.append(Node("write", (i, j), args))
    return nodes


def last_uses(nodes: list[Node]) -> dict[NodeId, int]:
    """For each node that others need, the position of the last node that needs it."""
    last: dict[NodeId, int] = {}
    for position, node in enumerate(nodes):
        for dep in node.deps:
            last[dep] = position
    return last


def run_in_order(nodes: list[Node], call: Callable[[Node, list[Any]], Any]) -> None:
    """Run ``nodes`` one after another in this process, as a driver does on one thread.

    ``call(node, args)`` runs a node; ``args`` holds the results of the nodes it
    needs in their places and :class:`Slot` markers and ``None`` as they are. Each
    result is dropped once the last node that needs it has run.
    """
    last = last_uses(nodes)
    live: dict[NodeId, Any] = {}
    for position, node in enumerate(nodes):
        args = [live[arg] if isinstance(arg, tuple) else arg for arg in node.args]
        result = call(node, args)
        if node.id in last:
            live[node.id] = result
        for dep in node.deps:
            if last[dep] == position:
                del live[dep]
