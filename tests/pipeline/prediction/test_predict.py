import numpy as np
import pytest
import rasterio
from dask.distributed import Client, LocalCluster

from terraseg.pipeline.errors import InputError
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.grid import axis_offsets
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.driver import predict_files
from terraseg.pipeline.prediction.inference import cached_model
from terraseg.pipeline.prediction.job import needs_work, plan_file
from terraseg.workflows.executor import DaskExecutor
from tests.helpers import tiny_model_artifact, tiny_scenes

CONFIG = PredictConfig(
    probabilities=True, probability_dtype="float32", block_size=96, batch_size=4, threads=1
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny_model_artifact(tmp_path_factory.mktemp("model") / "model"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return tiny_scenes(tmp_path_factory.mktemp("scenes"), nodata="holes")


def plan(model, path, out, config=CONFIG):
    return plan_file(model, cached_model(model), path, out, config)


def predict_file(job):
    (outcome,) = predict_files([job], InProcessExecutor())
    assert outcome.error is None, outcome.error
    return outcome.outputs


def run_prediction(client, jobs, **options):
    return predict_files(jobs, DaskExecutor(client), **options)


def rasters(outputs):
    """The COGs among the outputs (not their QGIS styles)."""
    return [p for p in outputs if p.suffix == ".tif"]


def read(path, band=None):
    with rasterio.open(path) as src:
        return src.read() if band is None else src.read(band)


@pytest.fixture(scope="module")
def sequential(model, scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    return [predict_file(plan(model, path, out)) for path in scenes.scenes]


def test_outputs_are_cogs_on_the_input_grid(sequential, scenes):
    classes_path, probs_path, *styles = sequential[0]
    assert [p.name for p in styles] == [
        "scene_000_classes.qml",
        "scene_000_probabilities.qml",
        "scene_000_classes.tif.aux.xml",
    ]
    with rasterio.open(scenes.scenes[0]) as src, rasterio.open(classes_path) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        assert out.nodata == 255 and out.dtypes[0] == "uint8"
        assert out.profile["tiled"]
        assert out.colormap(1)[1] == (220, 40, 40, 255)
        assert out.tags()["TERRASEG_MODEL"].endswith("model")
        nodata = (src.read() == 0).all(axis=0)
        classes = out.read(1)
    assert nodata.any()
    np.testing.assert_array_equal(classes == 255, nodata)  # nodata in, nodata out
    with rasterio.open(probs_path) as probs:
        assert probs.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert probs.count == 6 and probs.descriptions[-1] == "confidence"
        p = probs.read()
        mask = probs.dataset_mask()
    np.testing.assert_array_equal(mask == 0, nodata)
    np.testing.assert_allclose(p[:5, ~nodata].sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p[:5].argmax(axis=0)[~nodata], classes[~nodata])
    np.testing.assert_allclose(p[5], p[:5].max(axis=0))


def test_no_seams_at_tile_borders(model, tmp_path):
    """Mean |change of probability| between neighbouring columns that straddle a tile
    edge, against the same between columns inside tiles: blending makes them equal,
    plain tiling without overlap makes the edges stand out."""
    scene = tiny_scenes(tmp_path / "s", scenes=1, size="640x384", resolution=1.0).scenes[0]

    def ratio(config):
        job = plan(model, scene, tmp_path / config.window, config)
        outputs = predict_file(job)
        with rasterio.open(outputs[0]) as out:
            assert out.overviews(1) == [2]  # mode overviews once the raster exceeds one COG block
        probs = read(outputs[1])[:5]
        step = np.abs(np.diff(probs, axis=2)).mean(axis=(0, 1))
        edges = {
            e
            for o in axis_offsets(probs.shape[2], 64, config.overlap_pixels(64))
            for e in (o - 1, o + 63)
        }
        edges = sorted(e for e in edges if 0 <= e < len(step))
        inside = np.setdiff1d(np.arange(len(step)), edges)
        return step[edges].mean() / step[inside].mean()

    blended = ratio(CONFIG.model_copy(update={"window": "spline", "overlap": 0.25}))
    plain = ratio(CONFIG.model_copy(update={"window": "flat", "overlap": 0.0}))
    assert blended <= 1.05
    assert plain > 2.0  # the measure does see seams when there are some


def test_dask_cluster_and_real_scheduler_are_bit_identical(
    model, scenes, sequential, dask_scheduler_address, tmp_path
):
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        local = run_prediction(client, [plan(model, p, tmp_path / "local") for p in scenes.scenes])
    with Client(dask_scheduler_address) as client:
        remote = run_prediction(
            client, [plan(model, p, tmp_path / "remote") for p in scenes.scenes]
        )
    for one, two, three in zip(sequential, local, remote, strict=True):
        assert two.error is None and three.error is None
        for a, b, c in zip(rasters(one), rasters(two.outputs), rasters(three.outputs), strict=True):
            np.testing.assert_array_equal(read(a), read(b))
            np.testing.assert_array_equal(read(a), read(c))


def test_a_file_failing_mid_run_is_reported_while_the_files_around_it_complete(
    model, scenes, sequential, tmp_path
):
    # planned while readable, then damaged: its block tasks fail on the cluster
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(scenes.scenes[0].read_bytes())
    out = tmp_path / "out"
    jobs = [plan(model, p, out) for p in (scenes.scenes[0], damaged, scenes.scenes[1])]
    damaged.write_bytes(b"not a raster any more")
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        # a window of 2 blocks: the next file's blocks start before a file's last one is done
        outcomes = run_prediction(client, jobs, window=2)
    assert outcomes[1].error and "damaged.tif" in outcomes[1].error
    assert outcomes[1].outputs == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for o in (outcomes[0], outcomes[2]) for p in o.outputs
    )  # no scratch store, staging file or output of the damaged file is left
    for expected, outcome in zip(sequential, (outcomes[0], outcomes[2]), strict=True):
        assert outcome.error is None
        for a, b in zip(rasters(expected), rasters(outcome.outputs), strict=True):
            np.testing.assert_array_equal(read(a), read(b))


def test_rerun_skips_current_outputs(model, scenes, sequential, tmp_path):
    out = sequential[0][0].parent
    job = plan(model, scenes.scenes[0], out)
    assert not needs_work(job)
    assert needs_work(
        plan(model, scenes.scenes[0], out, CONFIG.model_copy(update={"tta": "flips"}))
    )
    assert needs_work(
        plan(model, scenes.scenes[0], out, CONFIG.model_copy(update={"overwrite": True}))
    )
    assert needs_work(plan(model, scenes.scenes[0], tmp_path))


def test_tta_and_windows_run(model, scenes, tmp_path):
    for update in (
        {"tta": "d4"},
        {"window": "gaussian"},
        {"window": "hann", "probabilities": False},
    ):
        outputs = predict_file(
            plan(
                model,
                scenes.scenes[1],
                tmp_path / str(len(update)),
                CONFIG.model_copy(update=update),
            )
        )
        classes = read(outputs[0], 1)
        assert set(np.unique(classes)) <= {0, 1, 2, 3, 4, 255}


class TestBadInput:
    def test_band_count_names_both(self, model, scenes, tmp_path):
        three = tmp_path / "three.tif"
        with (
            rasterio.open(scenes.scenes[0]) as src,
            rasterio.open(three, "w", **{**src.profile, "count": 3}) as dst,
        ):
            dst.write(src.read([1, 2, 3]))
        with pytest.raises(
            InputError, match=r"three\.tif: raster gives 3 bands but the model takes 4 \(red, green"
        ):
            plan(model, three, tmp_path)
        with pytest.raises(InputError, match="asks for band 5 but the raster has 4"):
            plan(
                model, scenes.scenes[0], tmp_path, CONFIG.model_copy(update={"bands": [1, 2, 3, 5]})
            )

    def test_dtype_names_both(self, model, tmp_path):
        wide = tiny_scenes(tmp_path / "u16", scenes=1, dtype="uint16").scenes[0]
        with pytest.raises(InputError, match="raster is uint16 but the model was trained on uint8"):
            plan(model, wide, tmp_path)

    def test_band_selection_reorders(self, model, scenes, tmp_path):
        job = plan(
            model, scenes.scenes[0], tmp_path, CONFIG.model_copy(update={"bands": [4, 3, 2, 1]})
        )
        assert job.raster.bands == [4, 3, 2, 1]


def test_registered_model_by_alias_predicts_like_its_folder(
    scenes, tmp_path, sqlite_store_uri, monkeypatch
):
    from terraseg.workflows.mlflow_tracking import start_tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store_uri)
    folder = tiny_model_artifact(tmp_path / "model", seed=3)
    with start_tracking(
        sqlite_store_uri, "predict-tests", "run", register="seg-predict", alias="prod"
    ) as tracker:
        uri = tracker.log_model(folder)
    assert uri is not None and uri.startswith("models:/seg-predict/")
    by_alias = predict_file(plan("models:/seg-predict@prod", scenes.scenes[0], tmp_path / "alias"))
    by_folder = predict_file(plan(str(folder), scenes.scenes[0], tmp_path / "folder"))
    for a, b in zip(rasters(by_alias), rasters(by_folder), strict=True):
        np.testing.assert_array_equal(read(a), read(b))
    with rasterio.open(by_alias[0]) as src:
        assert src.tags()["TERRASEG_MODEL"] == "models:/seg-predict@prod"
        assert src.tags()["TERRASEG_MODEL_VERSION"] == uri  # the alias, resolved to its version


@pytest.mark.parametrize("size", ["768x1536", "1536x768"])
def test_blocks_of_different_heights_and_widths(tmp_path, size):
    """A 1536 x 768 raster with 256-px tiles has blocks of 576 rows and 384 columns:
    the scratch store's chunks follow each axis, so every block writes chunks of its own."""
    model = str(tiny_model_artifact(tmp_path / "model", tile=256))
    scene = tiny_scenes(tmp_path / "s", scenes=1, size=size, resolution=1.0).scenes[0]
    job = plan(model, scene, tmp_path / "out", CONFIG.model_copy(update={"block_size": 1024}))
    rows, cols = job.plan.rows.bounds, job.plan.cols.bounds
    assert rows[1] != cols[1]  # the case: unequal block steps
    classes, *_ = predict_file(job)
    with rasterio.open(scene) as src, rasterio.open(classes) as out:
        valid = src.dataset_mask() > 0
        np.testing.assert_array_equal(out.read(1) == 255, ~valid)
