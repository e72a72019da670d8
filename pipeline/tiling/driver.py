"""The one driver of ``terraseg tile``: scenes to window tasks, merge trees and finish tasks.

For each scene still to do, the driver submits one task per chunk-aligned window
(:func:`pipeline.tiling.chunks.tile_window`), one at a time, so that workers start
on the first windows while the labels of later ones are still being cut out; a
tree of merge tasks (:data:`FAN_IN` summaries each) reduces the window summaries,
and one task per scene writes its tile index and marks it complete. When every
scene is finished, the driver assigns the split and the statistics of the store.

The same driver runs in one process (:class:`pipeline.executor.InProcessExecutor`)
and on a Dask cluster (``workflows.executor.DaskExecutor``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.classes import ClassTable
from pipeline.executor import Executor, Handle
from pipeline.files import remove_path
from pipeline.tiling.chunks import merge_summaries, tile_window
from pipeline.tiling.config import TileConfig
from pipeline.tiling.finish import finish_scene, finish_store
from pipeline.tiling.plan import ScenePlan
from pipeline.tiling.store import start_store

FAN_IN = 8  # summaries merged per merge task
Progress = Callable[[int, int], None]  # called with (windows done, windows in all)


def tile_scenes(
    store: Path,
    plans: Sequence[ScenePlan],
    config: TileConfig,
    classes: ClassTable,
    executor: Executor,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Tile ``plans`` into ``store`` through ``executor``; skip scenes already current.

    Args:
        store: The Zarr store to write (created when missing).
        plans: The scenes (see :func:`pipeline.tiling.plan.prepare_tiling`).
        config: Tiling settings.
        classes: The class table.
        executor: Where the tasks run.
        progress: Called with the windows done and the windows in all, after each
            batch of finished window tasks.

    Returns:
        A summary: scene and tile counts per split, statistics, and scenes skipped.

    Raises:
        Exception: The first failing task's error. Every task still queued is
            cancelled; a store this run created is removed, any other stays marked
            incomplete.
    """
    created = not store.exists()
    tasks = _Tasks(executor)
    try:
        todo = start_store(store, list(plans), config, classes)
        for plan in todo:
            tasks.submit_scene(str(store), plan, config, classes)
        tasks.wait_windows(progress)
        tasks.wait_finished()
    except BaseException:
        executor.cancel(tasks.outstanding())  # no task writes after this
        if created:
            remove_path(store)  # a store this run created is not left half-made
        raise
    summary = finish_store(str(store), config)
    summary["skipped"] = len(plans) - len(todo)
    return summary


@dataclass
class _Tasks:
    """The tasks of one run that are still wanted, and how to wait for them."""

    executor: Executor
    windows: set[Handle] = field(default_factory=set)
    finishes: list[Handle] = field(default_factory=list)

    def submit_scene(
        self, store: str, plan: ScenePlan, config: TileConfig, classes: ClassTable
    ) -> None:
        """Submit one scene's window tasks, their merge tree and the task that finishes it.

        Task keys are deterministic: ``tile-window-<scene>-<row>-<col>-<token>``,
        ``tile-merge-<scene>-<level>-<index>-<token>`` and ``tile-scene-<scene>-<token>``,
        the token being a hash of the store, the scene's source and the settings.
        """
        task_plan = plan.without_vector_labels()
        token = scene_token(store, plan, config)
        parts: list[Handle] = []
        for window in plan.task_windows(config):
            part = self.executor.submit(
                tile_window,
                store,
                task_plan,
                window,
                plan.window_labels(window, config),
                classes,
                config.tile_size,
                key=f"tile-window-{plan.name}-{window.row_off}-{window.col_off}-{token}",
            )
            parts.append(part)
            self.windows.add(part)
        merged = self._merge_tree(parts, f"{plan.name}-{token}")
        self.finishes.append(
            self.executor.submit(
                finish_scene,
                store,
                task_plan,
                merged,
                config,
                classes.num_classes,
                key=f"tile-scene-{plan.name}-{token}",
            )
        )

    def _merge_tree(self, parts: list[Handle], name: str) -> Handle:
        level = 0
        while len(parts) > 1:
            parts = [
                self.executor.submit(
                    merge_summaries, *parts[i : i + FAN_IN], key=f"tile-merge-{name}-{level}-{i}"
                )
                for i in range(0, len(parts), FAN_IN)
            ]
            level += 1
        return parts[0]

    def wait_windows(self, progress: Progress | None) -> None:
        """Wait for every window task; raise the first error.

        A finished task's handle is dropped at once: the merge task that needs its
        summary holds it, and nothing else does.
        """
        total, done_count = len(self.windows), 0
        while self.windows:
            done = self.executor.wait_first(self.windows)
            self.windows -= done
            for handle in done:
                error = self.executor.error(handle)
                if error is not None:
                    raise error
            done_count += len(done)
            if progress is not None:
                progress(done_count, total)

    def wait_finished(self) -> None:
        """Wait for every scene's finish task; raise the first error."""
        while self.finishes:
            done = self.executor.wait_first(self.finishes)
            self.finishes = [h for h in self.finishes if h not in done]
            for handle in done:
                error = self.executor.error(handle)
                if error is not None:
                    raise error

    def outstanding(self) -> list[Handle]:
        """Handles of tasks that may not have run yet."""
        return [*self.windows, *self.finishes]


def scene_token(store: str, plan: ScenePlan, config: TileConfig) -> str:
    """A short hash of what a scene's tasks compute: the store, the source and the settings."""
    text = json.dumps([store, plan.name, plan.source, config.identity()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
