"""The Dask tasks of ``terraseg tile``: one task per chunk window, a reduction per scene."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dask.base import tokenize
from dask.distributed import Client, Future, as_completed
from tqdm import tqdm

from pipeline.classes import ClassTable
from pipeline.files import remove_path
from pipeline.tiling import (
    ChunkSummary,
    ScenePlan,
    TileConfig,
    finish_scene,
    finish_store,
    start_store,
    tile_chunk,
)

logger = logging.getLogger(__name__)
FAN_IN = 8  # summaries merged per reduction task


def submit_scene(
    client: Client,
    store: str,
    plan: ScenePlan,
    config: TileConfig,
    classes: ClassTable,
    submitted: list[Future[ChunkSummary]],
) -> Future[None]:
    """Submit the chunk tasks of one scene, their merge tree and the task that finishes it.

    Tasks are submitted one by one, so workers start on the first chunks while
    the labels of the later ones are still being cut out; each chunk future is
    appended to ``submitted`` at once, so a caller can cancel them all when
    anything fails. Task names are deterministic:
    ``tile-chunk-<scene>-<row>-<col>-<token>``.

    Returns:
        The future of the task that finishes the scene.
    """
    light = plan.light()
    token = tokenize(store, light.name, light.source, config.identity())
    chunks: list[Future[ChunkSummary]] = []
    for window in plan.chunks(config.tile_size, config.chunks_per_task):
        chunk = client.submit(
            tile_chunk,
            store,
            light,
            window,
            plan.chunk_labels(window, config),
            classes,
            config.tile_size,
            key=f"tile-chunk-{light.name}-{window.row_off}-{window.col_off}-{token}",
        )
        chunks.append(chunk)
        submitted.append(chunk)
    level, parts = 0, list(chunks)
    while len(parts) > 1:
        parts = [
            client.submit(
                _merge,
                *parts[i : i + FAN_IN],
                key=f"tile-merge-{light.name}-{level}-{i}-{token}",
            )
            for i in range(0, len(parts), FAN_IN)
        ]
        level += 1
    finish = client.submit(
        finish_scene,
        store,
        light,
        parts[0],
        config.tile_size,
        classes.num_classes,
        key=f"tile-scene-{light.name}-{token}",
    )
    return finish


def _merge(*summaries: ChunkSummary) -> ChunkSummary:
    result = summaries[0]
    for summary in summaries[1:]:
        result = result.merge(summary)
    return result


def run_tiling(
    client: Client,
    store: Path,
    plans: list[ScenePlan],
    config: TileConfig,
    classes: ClassTable,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Tile ``plans`` into ``store`` on ``client``'s cluster; skip scenes already current.

    Returns:
        A summary: scene and tile counts per split, statistics, and scenes skipped.

    Raises:
        Exception: The first failing task's error; the store stays marked incomplete.
    """
    created = not store.exists()
    chunk_futures: list[Future[ChunkSummary]] = []
    finish_futures: list[Future[None]] = []
    try:
        todo = start_store(store, plans, config, classes)
        for plan in todo:
            finish_futures.append(
                submit_scene(client, str(store), plan, config, classes, chunk_futures)
            )
        with tqdm(
            total=len(chunk_futures), desc="tiling", unit="chunk", disable=not progress, leave=False
        ) as bar:
            for future in as_completed(chunk_futures):
                future.result()
                future.release()  # the reduction holds what it still needs
                bar.update(1)
        client.gather(finish_futures)
    except BaseException:
        client.cancel([*chunk_futures, *finish_futures])  # no task writes after this
        if created:
            remove_path(store)  # a store this run created is not left half-made
        raise
    summary = finish_store(str(store), config)
    summary["skipped"] = len(plans) - len(todo)
    return summary
