"""The one driver of ``terraseg tile``: scenes to window tasks, merge trees and finish tasks.

The driver holds the store's lock (:func:`terraseg.pipeline.locks.output_lock`) for the
whole run, so a second run on the same store refuses at once. For each scene
still to do it submits one task per chunk-aligned window
(:func:`terraseg.pipeline.tiling.chunks.tile_window`), one at a time, so that workers start
on the first windows while the labels of later ones are still being cut out, and a
tree of merge tasks (:data:`FAN_IN` summaries each) that reduces their summaries.
Once every window of a scene has reported back, counted against the scene's plan,
it submits the task that checks the merged summary covers every planned window,
writes the scene's tile index and marks it complete. When every scene is finished,
the driver assigns the split and the statistics of the store and marks it complete.

Task keys are deterministic within a run and distinct between runs (they carry the
run id), so a cluster never hands one run the results of another's tasks.

A store on object storage (``s3://``, ``gs://``) is tiled in its staging folder on this
disk (:func:`terraseg.pipeline.remote.local_folder`): the stored one is downloaded
first (unless overwritten), and the finished store is uploaded with its root
``zarr.json`` last (:func:`terraseg.pipeline.remote.upload_folder`). A failed run
uploads nothing.

The same driver runs in one process (:class:`terraseg.pipeline.executor.InProcessExecutor`)
and on a Dask cluster (``terraseg.workflows.executor.DaskExecutor``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terraseg.pipeline.classes import ClassTable
from terraseg.pipeline.errors import IncompleteOutputError, LockedError
from terraseg.pipeline.executor import Executor, Handle
from terraseg.pipeline.files import remove_path
from terraseg.pipeline.locks import LockHolder, lock_path, output_lock
from terraseg.pipeline.remote import (
    download_folder,
    fsspec_url,
    is_remote,
    local_folder,
    remote_exists,
    upload_folder,
)
from terraseg.pipeline.tiling.chunks import merge_summaries, tile_window
from terraseg.pipeline.tiling.config import TileConfig
from terraseg.pipeline.tiling.finish import finish_scene, finish_store, stored_scene_tiles
from terraseg.pipeline.tiling.plan import ScenePlan
from terraseg.pipeline.tiling.split import SceneTiles, fit_split_block
from terraseg.pipeline.tiling.store import remove_partial_chunks, start_store

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
    overwrite: bool = False,
    lock: LockHolder | None = None,
) -> dict[str, Any]:
    """Tile ``plans`` into ``store`` through ``executor``; skip scenes already current.

    Scenes already in the store that are not among ``plans`` are kept (a warning
    names them) unless ``overwrite`` replaces the whole store.

    Args:
        store: The Zarr store to write (created when missing).
        plans: The scenes (see :func:`terraseg.pipeline.tiling.plan.prepare_tiling`).
        config: Tiling settings.
        classes: The class table.
        executor: Where the tasks run.
        progress: Called with the windows done and the windows in all, after each
            batch of finished window tasks.
        overwrite: Replace the whole store instead of adding to it.
        lock: The caller's hold on the store's lock, when it took the lock itself
            (before starting a cluster, say); otherwise the driver takes it.

    Returns:
        A summary: scene and tile counts per split, statistics, scenes skipped
        (current already) and kept (in the store, not among the inputs), and the
        split block side used (lowered from ``config.split_block`` when the store's
        tiles would otherwise lie in one split block; see :func:`fit_split`).

    Raises:
        InputError: Validation is asked for and every tile lies in one split block
            whatever its side (before anything is written).
        LockedError: Another live run holds the store's lock.
        IncompleteOutputError: A scene's windows did not all report back.
        Exception: The first failing task's error. Every task still queued is
            cancelled; a store this run created is removed, any other stays marked
            incomplete.
    """
    with ExitStack() as stack:
        if lock is None:
            lock = stack.enter_context(output_lock(store))
        else:
            _check_held(store, lock)
        args = (plans, config, classes, executor, lock.run_id, progress, overwrite)
        return _run_staged(store, *args) if is_remote(store) else _run(store, *args)


def _run_staged(store: Path, *args: Any) -> dict[str, Any]:
    """:func:`_run` into the staging copy of a remote store; upload it when finished."""
    local = local_folder(store)
    overwrite = args[-1]
    remove_path(local)
    if not overwrite and remote_exists(f"{fsspec_url(store)}/zarr.json"):  # a whole store
        download_folder(store, local)
    summary = _run(local, *args)
    upload_folder(local, store, marker="zarr.json")
    remove_path(local)
    return summary


def _run(
    store: Path,
    plans: Sequence[ScenePlan],
    config: TileConfig,
    classes: ClassTable,
    executor: Executor,
    run_id: str,
    progress: Progress | None,
    overwrite: bool,
) -> dict[str, Any]:
    config = fit_split(store, plans, config, overwrite)  # refused here, before any write
    created = overwrite or not store.exists()
    tasks = _Tasks(executor, str(store), config, classes, run_id)
    try:
        start = start_store(store, list(plans), config, classes, run_id=run_id, overwrite=overwrite)
        for plan in start.todo:
            tasks.submit_scene(plan)
        tasks.wait_windows(progress)
        tasks.wait_finished()
        remove_partial_chunks(store, [plan.name for plan in start.todo])
        summary = finish_store(str(store), config)
    except BaseException:
        executor.cancel(tasks.outstanding())  # no queued task writes after this
        if created:
            remove_path(store)  # a store this run created is not left half-made
        raise
    counts = {"skipped": len(plans) - len(start.todo), "kept": len(start.kept)}
    return {**summary, **counts, "split_block": config.split_block}


def fit_split(
    store: Path, plans: Sequence[ScenePlan], config: TileConfig, overwrite: bool
) -> TileConfig:
    """``config`` with a split block side that leaves validation non-empty.

    The side is fitted (:func:`~terraseg.pipeline.tiling.split.fit_split_block`) to the tiles
    of every scene the store will hold: the planned ones and, unless ``overwrite``,
    those it keeps.

    Raises:
        InputError: No side gives two split blocks (and validation is asked for).
    """
    scenes = [SceneTiles(p.name, p.crs, p.transform, p.tiles(config)) for p in plans]
    if not overwrite:
        scenes += stored_scene_tiles(store, {p.name for p in plans})
    side = fit_split_block(scenes, config)
    return config if side == config.split_block else config.model_copy(update={"split_block": side})


def _check_held(store: Path, lock: LockHolder) -> None:
    try:
        holder = json.loads(lock_path(store).read_text()).get("run_id")
    except (OSError, ValueError):
        holder = None
    if holder != lock.run_id:
        raise LockedError("the lock given is not this store's current lock", path=store)


@dataclass
class _Scene:
    """A scene whose windows have not all reported back yet."""

    plan: ScenePlan  # without vector labels
    token: str
    windows: int  # planned windows not yet reported
    merged: Handle  # the root of the merge tree


@dataclass
class _Tasks:
    """The tasks of one run that are still wanted, and how to wait for them."""

    executor: Executor
    store: str
    config: TileConfig
    classes: ClassTable
    run_id: str
    windows: dict[Handle, str] = field(default_factory=dict)  # window task -> scene
    scenes: dict[str, _Scene] = field(default_factory=dict)
    finishes: list[Handle] = field(default_factory=list)

    def submit_scene(self, plan: ScenePlan) -> None:
        """Submit one scene's window tasks and their merge tree.

        Keys: ``tile-window-<scene>-<row>-<col>-<token>`` and
        ``tile-merge-<scene>-<token>-<level>-<index>``, the token being a hash of the
        store, the scene's source, the settings and the run id.
        """
        task_plan = plan.without_vector_labels()
        token = scene_token(self.store, plan, self.config, self.run_id)
        parts: list[Handle] = []
        for window in plan.task_windows(self.config):
            part = self.executor.submit(
                tile_window,
                self.store,
                task_plan,
                window,
                plan.window_labels(window, self.config),
                self.classes,
                self.config.tile_size,
                self.run_id,
                key=f"tile-window-{plan.name}-{window.row_off}-{window.col_off}-{token}",
            )
            parts.append(part)
            self.windows[part] = plan.name
        merged = self._merge_tree(parts, f"{plan.name}-{token}")
        self.scenes[plan.name] = _Scene(task_plan, token, len(parts), merged)

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
        """Wait for every window task; raise the first error; finish each scene when due.

        A finished task's handle is dropped at once: the merge task that needs its
        summary holds it, and nothing else does.

        Raises:
            IncompleteOutputError: A scene's windows did not all report back.
        """
        total, done_count = len(self.windows), 0
        while self.windows:
            done = self.executor.wait_first(self.windows)
            for handle in done:
                name = self.windows.pop(handle)
                error = self.executor.error(handle)
                if error is not None:
                    raise error
                self._reported(name)
            done_count += len(done)
            if progress is not None:
                progress(done_count, total)
        if self.scenes:  # a scene whose windows did not all come back is never finished
            name, scene = next(iter(self.scenes.items()))
            raise IncompleteOutputError(
                f"scene {name}: {scene.windows} windows did not report back", path=scene.plan.image
            )

    def _reported(self, name: str) -> None:
        """Count one window of scene ``name``; submit its finish task after the last."""
        scene = self.scenes[name]
        scene.windows -= 1
        if scene.windows:
            return
        del self.scenes[name]
        self.finishes.append(
            self.executor.submit(
                finish_scene,
                self.store,
                scene.plan,
                scene.merged,
                self.config,
                self.classes.num_classes,
                self.run_id,
                key=f"tile-scene-{name}-{scene.token}",
            )
        )

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
        merges = [scene.merged for scene in self.scenes.values()]
        return [*self.windows, *merges, *self.finishes]


def scene_token(store: str, plan: ScenePlan, config: TileConfig, run_id: str) -> str:
    """A short hash of a scene's tasks: the store, the source, the settings and the run."""
    text = json.dumps(
        [store, plan.name, plan.source, config.model_dump(), run_id], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
