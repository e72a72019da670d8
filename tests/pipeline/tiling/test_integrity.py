"""Output integrity of ``terraseg tile``: one run per store, additions, completeness checks."""

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import zarr

from terraseg.pipeline.classes import read_classes
from terraseg.pipeline.errors import (
    ConfigError,
    IncompleteOutputError,
    LockedError,
    OutputExistsError,
)
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.locks import lock_path
from terraseg.pipeline.store import open_existing, scene_names
from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
from terraseg.pipeline.tiling.chunks import merge_summaries, tile_window
from terraseg.pipeline.tiling.finish import finish_scene, finish_store
from terraseg.pipeline.tiling.store import start_store
from tests.helpers import tiny_scenes
from tests.pipeline.tiling.stores import (
    assert_same_store,
    contents,
    is_complete,
    tile_command,
    tile_here,
)

CONFIG = TileConfig(tile_size=32)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_scenes(tmp_path_factory.mktemp("scenes"), nodata="holes")


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    """Both scenes tiled at once in this process."""
    out = tmp_path_factory.mktemp("reference") / "both.zarr"
    tile_here(out, synth.scenes, synth.labels[0], synth.classes, tile_size=32)
    return out


def plan(synth, images, config=CONFIG):
    return prepare_tiling(
        images, vector_labels=synth.labels[0], classes=read_classes(synth.classes), config=config
    )


def run(store, synth, images, config=CONFIG, **options):
    plans, table = plan(synth, images, config)
    return tile_scenes(store, plans, config, table, InProcessExecutor(), **options)


def test_two_cli_runs_on_one_store_one_refuses_and_the_store_is_one_runs(
    synth, reference, tmp_path
):
    out = tmp_path / "shared.zarr"
    command = tile_command(
        synth.scenes, synth.labels[0], out, "--tile-size", "32", "--workers", "1"
    )
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [(p, *p.communicate(timeout=300)) for p in processes]
    assert sorted(p.returncode for p in processes) == [0, 1], [o[2] for o in outcomes]
    (winner, _, _), (_, loser_out, loser_err) = sorted(outcomes, key=lambda o: o[0].returncode)
    lines = [line for line in loser_err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in loser_err, loser_err
    assert lines[0].startswith(f"Error: {out}: another terraseg run (pid {winner.pid} on ")
    assert loser_out == ""
    assert_same_store(out, reference)
    assert not lock_path(out).exists()


def test_cli_adds_to_a_store_and_keeps_its_other_scenes(synth, reference, tmp_path):
    out = tmp_path / "grown.zarr"
    tile_here(out, synth.scenes[:1], synth.labels[0], synth.classes, tile_size=32)
    added = subprocess.run(
        tile_command(synth.scenes[1:], synth.labels[0], out, "--tile-size", "32", "--workers", "1"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "keeps 1 scene(s) that are not among the inputs: scene_000" in added.stderr
    assert '"kept": 1' in added.stdout
    assert_same_store(out, reference)  # as if both had been tiled at once


def test_overwrite_replaces_the_whole_store(synth, tmp_path):
    out = tmp_path / "replaced.zarr"
    run(out, synth, synth.scenes[:1])
    summary = run(out, synth, synth.scenes[1:], overwrite=True)
    assert summary["kept"] == 0
    assert scene_names(open_existing(out)) == ["scene_001"]


def test_a_file_given_twice_is_tiled_once(synth, monkeypatch):
    monkeypatch.chdir(synth.scenes[0].parent)
    relative = synth.scenes[0].relative_to(synth.scenes[0].parent)
    plans, _ = plan(synth, [synth.scenes[0], relative, synth.scenes[0], synth.scenes[1]])
    assert [p.name for p in plans] == ["scene_000", "scene_001"]


def test_a_scene_missing_a_window_is_never_marked_complete(synth, reference, tmp_path):
    store = tmp_path / "partial.zarr"
    plans, table = plan(synth, synth.scenes)
    start_store(store, plans, CONFIG, table, run_id="run-1")
    scene = plans[0].without_vector_labels()
    windows = plans[0].task_windows(CONFIG)
    parts = [
        tile_window(str(store), scene, w, plans[0].window_labels(w, CONFIG), table, 32, "run-1")
        for w in windows[:-1]
    ]
    with pytest.raises(IncompleteOutputError, match=r"scene_000\.tif: scene scene_000: 1 of 12"):
        finish_scene(str(store), scene, merge_summaries(*parts), CONFIG, table.num_classes, "run-1")
    with pytest.raises(ValueError, match="windows summarized twice"):
        merge_summaries(parts[0], parts[0])
    assert zarr.open_group(str(store), path="scenes/scene_000").attrs["complete"] is False
    with pytest.raises(IncompleteOutputError, match=r"scene_000\.tif: scene scene_000 is not"):
        finish_store(str(store), CONFIG)
    assert not is_complete(store)
    run(store, synth, synth.scenes)  # the next run redoes both scenes
    assert_same_store(store, reference)


def test_tasks_run_again_rewrite_nothing_of_their_run(synth, tmp_path):
    store = tmp_path / "recomputed.zarr"
    run(store, synth, synth.scenes)
    before = contents(store)
    plans, table = plan(synth, synth.scenes[:1])
    run_id = zarr.open_group(str(store), path="scenes/scene_000").attrs["run"]
    scene = plans[0].without_vector_labels()
    parts = [  # as Dask recomputes them after a worker is lost, even after the split is set
        tile_window(str(store), scene, w, plans[0].window_labels(w, CONFIG), table, 32, run_id)
        for w in plans[0].task_windows(CONFIG)
    ]
    finish_scene(str(store), scene, merge_summaries(*parts), CONFIG, table.num_classes, run_id)
    after = contents(store)
    assert {"train", "val"} <= {v["split"] for v in after["attrs:scenes/scene_000"]["tiles"]}
    for key, value in before.items():
        if key.startswith("array:"):
            np.testing.assert_array_equal(after[key], value)
        else:
            assert after[key] == value, key


def test_a_task_of_another_run_writes_nothing(synth, tmp_path):
    store = tmp_path / "stale.zarr"
    plans, table = plan(synth, synth.scenes[:1])
    start_store(store, plans, CONFIG, table, run_id="current")
    window = plans[0].task_windows(CONFIG)[0]
    with pytest.raises(IncompleteOutputError, match="is not the one run earlier created"):
        tile_window(
            str(store),
            plans[0].without_vector_labels(),
            window,
            plans[0].window_labels(window, CONFIG),
            table,
            32,
            "earlier",
        )
    assert not (store / "scenes" / "scene_000" / "image" / "c").exists()


def test_a_live_lock_holder_is_refused_and_a_dead_one_taken_over(synth, tmp_path):
    store = tmp_path / "locked.zarr"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom terraseg.pipeline.locks import output_lock\n"
            "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
            str(store),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"another terraseg run \(pid {holder.pid} on "):
            run(store, synth, synth.scenes[:1])
        assert not store.exists()
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(store).exists()  # a killed holder leaves its lock behind
    run(store, synth, synth.scenes[:1])
    assert is_complete(store) and not lock_path(store).exists()


def test_an_interrupted_scene_not_among_the_inputs_is_refused(synth, tmp_path):
    store = tmp_path / "interrupted.zarr"
    plans, table = plan(synth, synth.scenes[:1])
    start_store(store, plans, CONFIG, table, run_id="killed")  # as a killed run leaves it
    with pytest.raises(
        IncompleteOutputError,
        match=r"scene scene_000 was left incomplete .* \(add .*scene_000\.tif",
    ):
        run(store, synth, synth.scenes[1:])
    assert scene_names(zarr.open_group(str(store))) == ["scene_000"]
    run(store, synth, synth.scenes[1:], overwrite=True)
    assert scene_names(open_existing(store)) == ["scene_001"]


def test_a_store_that_does_not_fit_is_refused_untouched(synth, tmp_path):
    store = tmp_path / "sixty-four.zarr"
    run(store, synth, synth.scenes[:1], TileConfig(tile_size=64))
    before = contents(store)
    with pytest.raises(OutputExistsError, match="holds scenes tiled with tile size 64, not 32"):
        run(store, synth, synth.scenes[1:])
    assert is_complete(store) and contents(store).keys() == before.keys()
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a store")
    with pytest.raises(OutputExistsError, match="notes: exists and is not a terraseg"):
        run(folder, synth, synth.scenes[:1])
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_failing_task_removes_the_store_it_created(synth, tmp_path):
    bad = tmp_path / "bad_labels.tif"
    with rasterio.open(synth.scenes[0]) as src:
        profile = {**src.profile, "count": 1, "nodata": None}
        shape = src.shape
    with rasterio.open(bad, "w", **profile) as dst:
        dst.write(np.full((1, *shape), 200, dtype=np.uint8))
    plans, table = prepare_tiling(
        synth.scenes[:1], label_rasters=[bad], classes=read_classes(synth.classes), config=CONFIG
    )
    store = tmp_path / "failed.zarr"
    with pytest.raises(ConfigError, match=r"bad_labels\.tif"):
        tile_scenes(store, plans, CONFIG, table, InProcessExecutor())
    assert not store.exists() and not lock_path(store).exists()


def test_changed_labels_or_classes_redo_the_scenes(tmp_path):
    scenes = tiny_scenes(tmp_path / "scenes", nodata="holes")
    store = tmp_path / "labels.zarr"

    def tile():
        return tile_here(store, scenes.scenes, scenes.labels[0], scenes.classes, tile_size=32)

    assert tile()["skipped"] == 0
    assert tile()["skipped"] == 2
    stat = scenes.labels[0].stat()
    os.utime(scenes.labels[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert tile()["skipped"] == 0  # the label file changed
    classes = scenes.classes.read_text()
    scenes.classes.write_text(classes.replace("building", "house"))
    assert tile()["skipped"] == 0  # the class table changed
    assert [c["name"] for c in open_existing(store).attrs["classes"]][1] == "house"
