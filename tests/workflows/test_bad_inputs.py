"""Every failure a user can cause is one line that names the file, exit 1, nothing left.

One table of bad inputs across the stages, each run through the real CLI on one
LocalCluster shared by the whole module (started once, passed as --scheduler). A
full disk is a tiny tmpfs where this process may mount one, else a file-size limit
(RLIMIT_FSIZE, so EFBIG) on a CLI subprocess with a LocalCluster of its own; a
read-only folder is a read-only tmpfs (as root) or a folder without write permission.
The messages of docs/troubleshooting.md are all among the table's.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner

from terraseg.pipeline.errors import OS_ERROR_REASONS
from terraseg.workflows.cli.main import cli
from tests.bad_input_data import BadInputs, make_bad_inputs

TERRASEG = str(Path(sys.executable).parent / "terraseg")
DOCS = Path(__file__).parents[2] / "docs" / "troubleshooting.md"
CLUSTER_COMMANDS = {"tile", "vectorize", "predict", "evaluate"}  # take --scheduler
FULL_SIZE = "64k"  # the tmpfs of a full disk: smaller than any of the outputs below
FILE_LIMIT = 4096  # bytes: RLIMIT_FSIZE where no tmpfs can be mounted (a chunk is larger)
FULL = (
    "no space left on the device",
    "file too large for the file system or for this process's file-size limit",
    "... needed to stage and write the class map, ... free",
)
READ_ONLY = ("read-only file system", "permission denied")
SECRET = "pw-not-shown"  # a password in a tracking URI: no message may show it
TRAIN = ["--no-track", "--width-multiplier", "0.25", "--members", "1",
         "--crop-size", "32", "--batch-size", "2",
         "--samples-per-epoch", "4", "--epochs", "1", "--num-workers", "0"]  # fmt: skip

Where = Literal["tmp", "readonly", "full"]


@dataclass(frozen=True)
class Case:
    """A bad input: the command line, the file its error names, and what must not exist.

    Paths are written as tokens: ``IN:name`` a generated input, ``OUT:name`` a file in
    the case's output folder (``OUT:`` the folder itself: a fresh temporary folder, a
    read-only one, or a full disk, as ``where`` says), and ``SCENE``, ``LABELS``,
    ``CLASSES``, ``STORE`` and ``MODEL`` the valid inputs.
    """

    args: tuple[str, ...]
    named: str  # the line starts with "Error: <this path>"
    message: str | tuple[str, ...]  # and holds this (or one of these)
    left: str | None = None  # a final output that must not exist afterwards
    where: Where = "tmp"


def case(
    args: list[str], named: str, message: str | tuple[str, ...], left: str | None = None,
    where: Where = "tmp",
) -> Case:  # fmt: skip
    return Case(tuple(args), named, message, left, where)


def tile(*images: str, labels: str = "LABELS", size: str = "64") -> list[str]:
    return ["tile", *images, "--labels", labels, "--out", "OUT:store.zarr", "--tile-size", size]


def vectorize(*rasters: str, out: str = "OUT:polygons.gpkg") -> list[str]:
    return ["vectorize", *rasters, "-o", out]


def predict(*rasters: str, model: str = "MODEL") -> list[str]:
    return ["predict", *rasters, "--model", model, "--out", "OUT:pred", "--device", "cpu"]


def evaluate(truth: str, *extra: str) -> list[str]:
    return ["evaluate", "IN:maps/scene_classes.tif", "--truth", truth, "--out", "OUT:e.json",
            *extra]  # fmt: skip


def train(data: str = "STORE", out: str = "OUT:run") -> list[str]:
    return ["train", "--data", data, "--out", out, *TRAIN]


MAP = "IN:maps/scene_classes.tif"
TRUNCATED = "cannot read rows ..., columns ... (damaged or truncated file?)"
CLASSES = ("--classes", "CLASSES")
TILE_TYPES = "tiling takes uint8, int8, uint16, int16, float32 or float64"

CASES: dict[str, Case] = {
    # tile
    "tile: --out is a file": case(
        ["tile", "SCENE", "--labels", "LABELS", "--out", "IN:a_file", "--tile-size", "64"],
        "IN:a_file", "exists and is not a terraseg training store"),
    "tile: read-only folder": case(tile("SCENE"), "OUT:", READ_ONLY, "OUT:store.zarr", "readonly"),
    "tile: full disk": case(tile("SCENE"), "OUT:store.zarr", FULL, "OUT:store.zarr", "full"),
    "tile: int64 raster": case(
        tile("IN:int64.tif"), "IN:int64.tif", f"raster is int64; {TILE_TYPES}", "OUT:store.zarr"),
    "tile: complex64 raster": case(
        tile("IN:complex64.tif"), "IN:complex64.tif", "raster is complex64; tiling takes ...",
        "OUT:store.zarr"),
    "tile: pixel types differ": case(
        tile("SCENE", "IN:uint16.tif"), "IN:uint16.tif",
        "raster is uint16 but scene.tif is uint8; one store holds one pixel type",
        "OUT:store.zarr"),
    "tile: tile larger than every raster": case(
        tile("SCENE", size="100000"), "SCENE",
        "--tile-size 100000 is larger than every raster (the largest is 256 x 192 pixels)",
        "OUT:store.zarr"),
    "tile: tile too large for memory": case(
        tile("IN:huge.tif", size="500000"), "IN:huge.tif",
        "--tile-size ... needs about ... of memory per task", "OUT:store.zarr"),
    "tile: label raster elsewhere": case(
        [*tile("SCENE", labels="IN:far_labels.tif"), *CLASSES], "IN:far_labels.tif",
        "label raster covers none of its image (scene.tif)", "OUT:store.zarr"),
    "tile: label raster without classes": case(
        tile("SCENE", labels="IN:far_labels.tif"), "IN:far_labels.tif",
        "label rasters and mask tiles need a classes file (no classes.yaml beside them); "
        "pass --classes FILE", "OUT:store.zarr"),
    "tile: truncated raster": case(
        tile("IN:truncated.tif"), "IN:truncated.tif", TRUNCATED, "OUT:store.zarr"),
    "tile: raster without CRS": case(
        tile("IN:no_crs.tif"), "IN:no_crs.tif",
        "raster has no CRS, so vector labels cannot be placed on it", "OUT:store.zarr"),
    "tile: labels without CRS": case(
        tile("SCENE", labels="IN:labels_no_crs.gpkg"), "IN:labels_no_crs.gpkg",
        "labels have no CRS", "OUT:store.zarr"),
    "tile: labels elsewhere": case(
        tile("SCENE", labels="IN:labels_far.gpkg"), "IN:labels_far.gpkg",
        "no label polygon overlaps any raster", "OUT:store.zarr"),
    "tile: no class column": case(
        tile("SCENE", labels="IN:labels_no_class.gpkg"), "IN:labels_no_class.gpkg",
        "no column 'class' (columns: ...)", "OUT:store.zarr"),
    "tile: unknown class names": case(
        [*tile("SCENE", labels="IN:labels_unknown_names.gpkg"), *CLASSES],
        "IN:labels_unknown_names.gpkg", "class names not in the classes file: ...",
        "OUT:store.zarr"),
    "tile: band counts differ": case(
        tile("SCENE", "IN:three_bands.tif"), "IN:three_bands.tif",
        "rasters have different band counts", "OUT:store.zarr"),
    "tile: no such raster": case(
        tile("IN:missing.tif"), "IN:missing.tif", "no raster files found", "OUT:store.zarr"),
    # vectorize
    "vectorize: an image": case(
        vectorize("SCENE"), "SCENE", "raster has 4 bands, but a class map is one band of class ids",
        "OUT:polygons.gpkg"),
    "vectorize: complex class map": case(
        vectorize("IN:complex_classes.tif"), "IN:complex_classes.tif",
        "raster is complex64, but a class map holds class ids", "OUT:polygons.gpkg"),
    "vectorize: floats without classes": case(
        vectorize("IN:float_classes.tif"), "IN:float_classes.tif",
        "float raster without a classes file", "OUT:polygons.gpkg"),
    "vectorize: raster without CRS": case(
        [*vectorize("IN:no_crs_classes.tif"), *CLASSES], "IN:no_crs_classes.tif",
        "raster has no CRS", "OUT:polygons.gpkg"),
    "vectorize: CRSs differ": case(
        [*vectorize(MAP, "IN:utm34_classes.tif"), *CLASSES], "IN:utm34_classes.tif",
        "CRS differs from ...", "OUT:polygons.gpkg"),
    "vectorize: confidence on another grid": case(
        [*vectorize(MAP), *CLASSES, "--confidence", "IN:small_confidence.tif"],
        "IN:small_confidence.tif", "confidence raster is not on the grid of ...",
        "OUT:polygons.gpkg"),
    "vectorize: output exists": case(
        [*vectorize(MAP, out="IN:a_file"), *CLASSES], "IN:a_file",
        "output exists; pass --overwrite to replace it"),
    "vectorize: layer name GDAL refuses": case(
        [*vectorize(MAP), *CLASSES, "--config", "IN:gpkg_layer.yaml"], "IN:gpkg_layer.yaml",
        "layer: GeoPackage reserves names that begin with 'gpkg'", "OUT:polygons.gpkg"),
    "vectorize: class name as layer": case(
        [*vectorize(MAP), "--classes", "IN:reserved_classes.yaml", "--layer-per-class"],
        "IN:reserved_classes.yaml", "layer name 'gpkg_building': GeoPackage reserves",
        "OUT:polygons.gpkg"),
    "vectorize: truncated class map": case(
        [*vectorize("IN:truncated_classes.tif"), *CLASSES], "IN:truncated_classes.tif",
        TRUNCATED, "OUT:polygons.gpkg"),
    "vectorize: output under a file": case(
        [*vectorize(MAP, out="IN:a_file/polygons.gpkg"), *CLASSES], "IN:a_file",
        "exists already; remove it or choose another name", "IN:a_file/polygons.gpkg"),
    "vectorize: read-only folder": case(
        [*vectorize(MAP), *CLASSES], "OUT:", READ_ONLY, "OUT:polygons.gpkg", "readonly"),
    "vectorize: full disk": case(
        [*vectorize(MAP), *CLASSES], "OUT:polygons.gpkg", FULL, "OUT:polygons.gpkg", "full"),
    # predict
    "predict: read-only folder": case(
        predict("SCENE"), "OUT:", READ_ONLY, "OUT:pred/scene_classes.tif", "readonly"),
    "predict: full disk": case(
        predict("SCENE"), "OUT:pred", FULL, "OUT:pred/scene_classes.tif", "full"),
    "predict: band count": case(
        predict("IN:three_bands.tif"), "IN:three_bands.tif",
        "raster gives 3 bands but the model takes 4", "OUT:pred/three_bands_classes.tif"),
    "predict: pixel type": case(
        predict("IN:uint16.tif"), "IN:uint16.tif",
        "raster is uint16 but the model was trained on uint8", "OUT:pred/uint16_classes.tif"),
    "predict: two inputs of one name": case(
        predict("IN:same/a/scene.tif", "IN:same/b/scene.tif"), "IN:same/a/scene.tif",
        "... would both write scene_classes.tif", "OUT:pred/scene_classes.tif"),
    "predict: int8 without calibration": case(
        [*predict("SCENE"), "--precision", "int8"], "MODEL", "the model has no int8 calibration",
        "OUT:pred/scene_classes.tif"),
    "predict: damaged model": case(
        predict("SCENE", model="IN:damaged_model"), "IN:damaged_model/weights.pt",
        "cannot load tensors", "OUT:pred/scene_classes.tif"),
    "predict: truncated raster": case(
        predict("IN:truncated.tif"), "IN:truncated.tif", TRUNCATED,
        "OUT:pred/truncated_classes.tif"),
    # evaluate
    "evaluate: truth elsewhere": case(
        evaluate("IN:far_truth", *CLASSES), "IN:far_truth",
        "the truth covers none of the predictions (scene_classes.tif)", "OUT:e.json"),
    "evaluate: vector truth elsewhere": case(
        evaluate("IN:labels_far.gpkg", *CLASSES), "IN:labels_far.gpkg",
        "the truth covers none of the predictions (scene_classes.tif)", "OUT:e.json"),
    "evaluate: nothing compared": case(
        evaluate("IN:ignored_truth", *CLASSES), "IN:ignored_truth", "no pixel was compared",
        "OUT:e.json"),
    "evaluate: prediction without classes": case(
        evaluate("IN:truth"), MAP, "the prediction names no classes; pass --classes FILE",
        "OUT:e.json"),
    "evaluate: read-only folder": case(
        evaluate("IN:truth", *CLASSES), "OUT:", READ_ONLY, "OUT:e.json", "readonly"),
    # train
    "train: crop larger than the tiles": case(
        [*train(), "--crop-size", "128"], "STORE",
        "--crop-size 128 is larger than the store's tiles (64 pixels)", "OUT:run"),
    "train: not a store": case(
        train("IN:a_file"), "IN:a_file", "not a Zarr store (run `terraseg tile` first)", "OUT:run"),
    "train: tiling did not finish": case(
        train("IN:unfinished.zarr"), "IN:unfinished.zarr", "tiling did not finish", "OUT:run"),
    "train: run folder in use": case(
        train(out="IN:used_run"), "IN:used_run", "holds a training run; pass --resume",
        "IN:used_run/model"),
    "train: read-only folder": case(train(), "OUT:", READ_ONLY, "OUT:run/model", "readonly"),
    "train: full disk": case(train(), "OUT:run", FULL, "OUT:run/model", "full"),
    "train: tracking server unreachable": case(
        [*train(), "--track", "--tracking-uri", f"http://user:{SECRET}@127.0.0.1:9"],
        "cannot reach the MLflow tracking server at http://user:***@127.0.0.1:9",
        "cannot reach the MLflow tracking server at http://user:***@127.0.0.1:9 "
        "(Connection refused)", "OUT:run"),
}  # fmt: skip
# Tested elsewhere, with the module that tests it.
OTHER_MESSAGES = {
    "model not registered: the tracking store stopped answering": "test_tracking_outage.py",
}


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of one LocalCluster (as the CLI starts it) shared by every case."""
    from terraseg.workflows.cluster import dask_client

    with dask_client(workers=1, threads_per_worker=2) as client:
        yield client.scheduler.address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, scheduler: str) -> BadInputs:
    """Every bad input, generated once."""
    root = tmp_path_factory.mktemp("bad-inputs")

    def tile_store(image: Path, labels: Path, out: Path) -> None:
        args = ["-q", "tile", image, "--labels", labels, "--out", out, "--tile-size", "64",
                "--scheduler", scheduler]  # fmt: skip
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    return make_bad_inputs(root, tile_store)


@contextmanager
def folder(where: Where, path: Path) -> Iterator[str]:
    """The case's output folder; yields how it was made: tmp, tmpfs, chmod or rlimit."""
    path.mkdir()
    if where == "tmp":
        yield "tmp"
        return
    if os.geteuid() != 0:
        if where == "readonly":
            path.chmod(0o555)
        yield "chmod" if where == "readonly" else "rlimit"
        path.chmod(0o755)
        return
    options = f"size={FULL_SIZE}" if where == "full" else "ro,size=64k"
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=False)
    if mount.returncode != 0:
        if where == "readonly":
            pytest.skip("no read-only folder: as root, and no tmpfs can be mounted")
        yield "rlimit"
        return
    try:
        yield "tmpfs"
    finally:
        subprocess.run(["umount", str(path)], check=True)


def resolve(token: str, d: BadInputs, out: Path) -> str:
    """A command-line token with the generated paths put in (see :class:`Case`)."""
    valid = {"SCENE": d.scene, "LABELS": d.labels, "CLASSES": d.classes, "STORE": d.store,
             "MODEL": d.model}  # fmt: skip
    if token in valid:
        return str(valid[token])
    if token.startswith("IN:"):
        return str(d.path(token.removeprefix("IN:")))
    if token.startswith("OUT:"):
        return str(out / token.removeprefix("OUT:")) if token != "OUT:" else str(out)
    return token


def run_case(args: list[str], made: str, scheduler: str) -> tuple[int, str, str]:
    """Exit code, stderr and anything else worth showing, of the CLI run on ``args``."""
    if made == "rlimit":  # the limit holds for the process and the cluster it starts

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))

        done = subprocess.run(
            [TERRASEG, "-q", *args], capture_output=True, text=True, preexec_fn=limit, check=False
        )
        return done.returncode, done.stderr, done.stdout
    if args[0] in CLUSTER_COMMANDS:
        args = [*args, "--scheduler", scheduler]
    result = CliRunner().invoke(cli, ["-q", *args])
    unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
    assert unexpected is None, f"Traceback: {unexpected!r}"
    return result.exit_code, result.stderr, result.output


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line(name: str, inputs: BadInputs, scheduler: str, tmp_path: Path):
    case = CASES[name]
    with folder(case.where, tmp_path / "out") as made:
        out = tmp_path / "out"
        args = [resolve(token, inputs, out) for token in case.args]
        code, stderr, everything = run_case(args, made, scheduler)
        assert code == 1, everything
        assert "Traceback" not in everything and "Traceback" not in stderr, stderr
        assert SECRET not in everything + stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        named = resolve(case.named, inputs, out)
        assert lines[0].startswith(f"Error: {named}"), (lines[0], named)
        assert any(shows(lines[0], message) for message in messages(case)), lines[0]
        if case.left is not None:
            assert not Path(resolve(case.left, inputs, out)).exists(), "a final output is left"


def troubleshooting_messages() -> list[str]:
    """The messages docs/troubleshooting.md explains (in bold code spans)."""
    return [m for _, m in re.findall(r"\*\*(`+)(.+?)\1\*\*", DOCS.read_text())]


def messages(case: Case) -> tuple[str, ...]:
    return (case.message,) if isinstance(case.message, str) else case.message


def shows(line: str, message: str) -> bool:
    """Whether ``line`` holds ``message``, each ``...`` in it standing for any text."""
    pattern = ".+?".join(re.escape(part) for part in message.split("..."))
    return re.search(pattern, line) is not None


def test_troubleshooting_rows_are_tested_cases():
    table = {message for case in CASES.values() for message in messages(case)}
    documented = troubleshooting_messages()
    assert len(documented) >= 30
    untested = [m for m in documented if m not in table and m not in OTHER_MESSAGES]
    assert untested == []
    for message, module in OTHER_MESSAGES.items():
        assert message in (Path(__file__).parent / module).read_text()


def test_verbose_shows_the_traceback_above_the_line(inputs: BadInputs):
    args = ["-v", "vectorize", inputs.path("maps/scene_classes.tif"), "-o",
            inputs.path("a_file") / "polygons.gpkg", "--classes", inputs.classes]  # fmt: skip
    done = subprocess.run([TERRASEG, *map(str, args)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "FileExistsError" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"Error: {inputs.path('a_file')}: {OS_ERROR_REASONS[errno.EEXIST]}"


@pytest.mark.parametrize("error", [ValueError("a bug"), OSError("an OSError naming no file")])
def test_other_exceptions_keep_their_traceback(inputs: BadInputs, tmp_path, monkeypatch, error):
    import terraseg.pipeline.vectorize.rasters

    def broken(*args: object) -> None:
        raise error

    monkeypatch.setattr(terraseg.pipeline.vectorize.rasters, "read_raster_info", broken)
    args = ["vectorize", inputs.path("maps/scene_classes.tif"), "-o", tmp_path / "p.gpkg"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is error  # not turned into a line: Click shows its traceback


@pytest.mark.parametrize("labels", ["vector", "raster"])
def test_labels_that_miss_a_scene_are_named_in_a_warning(
    inputs: BadInputs, scheduler: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, labels
):
    given = inputs.labels if labels == "vector" else inputs.label_raster
    args = ["-q", "tile", inputs.scene, inputs.path("far_scene.tif"), "--labels", given,
            "--classes", inputs.classes, "--out", tmp_path / "store.zarr", "--tile-size", "64",
            "--scheduler", scheduler]  # fmt: skip
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    missed = [r.getMessage() for r in caplog.records if "far_scene.tif" in r.getMessage()]
    assert len(missed) == 1 and "all its tiles are ignored in training" in missed[0], missed
