import json
import shutil

import pytest
import torch
import zarr
from click.testing import CliRunner

from terraseg.pipeline.artifact import load_artifact
from terraseg.pipeline.errors import TrainingError
from terraseg.pipeline.model.inference import inference_network
from terraseg.pipeline.model.quantization import quantize_backbone
from terraseg.pipeline.training import loop, records
from terraseg.pipeline.training.checkpoint import load_checkpoint
from terraseg.pipeline.training.components import (
    build_network,
    make_loaders,
    resolve_model_config,
)
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.dataset import TrainCrops, read_store_info
from terraseg.pipeline.training.loop import StepContext, train_step
from terraseg.pipeline.training.losses import SegmentationLoss
from terraseg.pipeline.training.optim import build_optimizer
from terraseg.pipeline.training.session import run_training
from terraseg.pipeline.training.tracker import NullTracker
from terraseg.workflows.cli.main import cli
from terraseg.workflows.train_run import init_distributed, launch

TINY = {
    # one network: the ensemble a store this small gets by default has tests of its own
    "model": {"backbone": "mobilenetv2", "width_multiplier": 0.25, "members": 1},
    "data": {"crop_size": 32, "batch_size": 2, "samples_per_epoch": 4, "num_workers": 0},
    "optimizer": {"lr": 0.02},
    "epochs": 2,
    "overlays": 1,
    "accelerator": "cpu",
}


def tiny(**changes):
    data = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainConfig.model_validate(data)


def train_with(tracker, config, store, out):
    """One process's training, reporting to ``tracker``."""
    place = init_distributed(config.accelerator)
    return run_training(config, store, out, place=place, tracker=tracker, progress=False)


def test_tiny_model_loss_decreases(store):
    config = tiny(**{"optimizer.name": "adamw", "optimizer.lr": 0.01})
    info = read_store_info(store, 0.05)
    ctx = init_distributed("cpu")
    raw, _ = build_network(resolve_model_config(config, info), config, ctx, None)
    crops = TrainCrops(info, 32, config.augment)
    batch = tuple(torch.stack(x) for x in zip(*[crops[(i, i)] for i in range(4)], strict=True))
    step = StepContext(
        raw, SegmentationLoss(5), build_optimizer(raw, config.optimizer), None, ctx.device
    )
    losses = [train_step(step, [batch]) for _ in range(12)]
    assert losses[-1] < 0.6 * losses[0]


def test_each_ensemble_member_gets_crops_of_its_own(store):
    config = tiny()
    info = read_store_info(store, 0.05)
    place = init_distributed("cpu")
    one, _, one_sampler, one_steps = make_loaders(config, info, place)
    three, _, sampler, steps = make_loaders(tiny(**{"model.members": 3}), info, place)
    assert steps == one_steps  # the members do not change the schedule
    assert len(sampler) == 3 * len(one_sampler)
    one_sampler.set_epoch(1)
    sampler.set_epoch(1)
    image, label = next(iter(three))
    assert image.shape[0] == label.shape[0] == 3 * config.data.batch_size
    parts = image.chunk(3)
    assert not torch.equal(parts[0], parts[1]) and not torch.equal(parts[1], parts[2])
    assert next(iter(one))[0].shape[0] == config.data.batch_size


def test_train_writes_checkpoints_model_and_summary(store, tmp_path):
    out = tmp_path / "run"
    summary = launch(tiny(**{"model.members": 0}), store, out, progress=False)  # automatic
    assert summary["epochs"] == 2 and 1 <= summary["best_epoch"] <= 2
    assert set(summary["val_iou"]) == {"background", "building", "road", "water", "vegetation"}
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "config.yaml", "summary.json",
                 "plots/confusion.png", "plots/overlays.png", "plots/curves.png"):  # fmt: skip
        assert (out / name).is_file(), name
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    artifact = load_artifact(out / "model")
    assert artifact.model_config["in_channels"] == 4 and artifact.model_config["num_classes"] == 5
    assert artifact.model_config["members"] == 3  # automatic: a store this small trains three
    assert artifact.calibration and all(k.startswith("members.") for k in artifact.calibration)
    assert artifact.tile_size == 64 and artifact.band_names == ["red", "green", "blue", "nir"]
    assert artifact.metadata["epoch"] == summary["best_epoch"]
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    for key, value in artifact.state_dict.items():
        assert torch.equal(value, best["model"][key])
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "state"} <= set(best)
    # int8 activation ranges observed on the validation tiles, fitting the network
    assert artifact.calibration
    network = inference_network(artifact.build_model(), "cpu")
    quantize_backbone(network, artifact.calibration, torch.float32)  # raises if they do not fit


class Interrupt(NullTracker):
    """Stops the run like Ctrl-C right after the checkpoint of epoch ``at``."""

    def __init__(self, at):
        self.at = at
        self.params = {}

    def log_params(self, params):
        self.params = params

    def log_metrics(self, metrics, step):
        if step == self.at:
            raise KeyboardInterrupt


def test_resume_equals_uninterrupted_training(store, tmp_path):
    config = tiny(**{"model.dropout": 0.1, "overlays": 0})
    launch(config, store, tmp_path / "straight", progress=False)
    tracker = Interrupt(at=1)
    with pytest.raises(KeyboardInterrupt):
        train_with(tracker, config, store, tmp_path / "resumed")
    assert "statistics.red.mean" in tracker.params and "optimizer.lr" in tracker.params
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["state"]["epoch"] == 1
    launch(config, store, tmp_path / "resumed", resume=True, progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert resumed["state"]["epoch"] == 2 and resumed["step"] == straight["step"]
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def _edit_tiles(store, tmp_path, edit):
    copy = tmp_path / "edited.zarr"
    shutil.copytree(store, copy)
    root = zarr.open_group(str(copy), mode="r+")
    for name in root["scenes"].group_keys():
        group = root[f"scenes/{name}"]
        group.attrs["tiles"] = [edit(dict(t)) for t in group.attrs["tiles"]]
    return copy


def test_store_without_labels(store, tmp_path):
    copy = _edit_tiles(store, tmp_path, lambda t: {**t, "class_counts": [0] * 5})
    with pytest.raises(TrainingError, match="no labelled pixels"):
        launch(tiny(), copy, tmp_path / "run", progress=False)


def test_empty_training_split(store, tmp_path):
    copy = _edit_tiles(store, tmp_path, lambda t: {**t, "split": "val"})
    with pytest.raises(TrainingError, match="training split is empty"):
        launch(tiny(), copy, tmp_path / "run", progress=False)


def test_resume_with_other_classes_or_bands(store, tmp_path):
    out = tmp_path / "run"
    launch(tiny(epochs=1, overlays=0), store, out, progress=False)
    copy = tmp_path / "renamed.zarr"
    shutil.copytree(store, copy)
    root = zarr.open_group(str(copy), mode="r+")
    root.attrs["classes"] = [{**c, "name": f"x{c['id']}"} for c in root.attrs["classes"]]
    with pytest.raises(TrainingError, match="classes differ from the checkpoint"):
        launch(tiny(), copy, out, resume=True, progress=False)
    checkpoint = load_checkpoint(out / "checkpoints" / "last.pt")
    checkpoint["model_config"]["in_channels"] = 3
    torch.save(checkpoint, out / "checkpoints" / "last.pt")
    with pytest.raises(TrainingError, match="band count differs from the checkpoint: store 4"):
        launch(tiny(), store, out, resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(store, tmp_path, monkeypatch):
    real = loop.micro_loss
    calls = []

    def diverging(ctx, batch):  # the loss turns NaN at the third step (epoch 2, step 1)
        calls.append(1)
        loss, value = real(ctx, batch)
        return (loss * float("nan"), value * float("nan")) if len(calls) >= 3 else (loss, value)

    monkeypatch.setattr(loop, "micro_loss", diverging)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="loss became nan at epoch 2, step 3") as info:
        launch(tiny(overlays=0), store, out, progress=False)
    assert "the last good checkpoint is kept" in str(info.value)
    assert str(out / "checkpoints" / "last.pt") in str(info.value)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["state"]["epoch"] == 1
    assert not (out / "model").exists()


def test_cli_train_and_errors(store, tmp_path):
    runner = CliRunner()
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({k: v for k, v in TINY.items() if k != "epochs"}))
    out = tmp_path / "cli-run"
    args = ["train", "--data", str(store), "--config", str(config), "--out", str(out)]
    result = runner.invoke(cli, ["-q", *args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 1
    result = runner.invoke(cli, ["-q", *args, "--epochs", "1"])
    assert result.exit_code == 1 and "pass --resume to continue it" in result.output
    (out / "notes.txt").write_text("of the former run")
    result = runner.invoke(cli, ["-q", *args, "--epochs", "1", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (out / "notes.txt").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    result = runner.invoke(cli, ["-q", "train", "--data", str(store), "--out", str(out), "--resume",
                                 "--epochs", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 2
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 2 and last["train/lr"] > 0  # the schedule follows the new --epochs
    result = runner.invoke(cli, ["train", "--data", str(store), "--resume"])
    assert result.exit_code == 2 and "--resume needs --out" in result.output


def strict_json(text):
    """Parse ``text`` as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _hide_class_in_validation(store, tmp_path, class_id):
    """A copy of ``store`` whose validation tiles label no pixel ``class_id`` (ignored instead)."""
    copy = tmp_path / "hidden.zarr"
    shutil.copytree(store, copy)
    root = zarr.open_group(str(copy), mode="r+")
    for name in root["scenes"].group_keys():
        group = root[f"scenes/{name}"]
        tiles = [dict(t) for t in group.attrs["tiles"]]
        for tile in (t for t in tiles if t["split"] == "val"):
            window = (slice(tile["row"], tile["row"] + tile["height"]),
                      slice(tile["col"], tile["col"] + tile["width"]))  # fmt: skip
            label = group["label"][window]
            label[label == class_id] = 255
            group["label"][window] = label
            tile["class_counts"] = [0 if i == class_id else c
                                    for i, c in enumerate(tile["class_counts"])]  # fmt: skip
        group.attrs["tiles"] = tiles
    return copy


def test_every_json_a_run_writes_is_strict(store, tmp_path):
    """A class absent from the validation tiles has a NaN accuracy: it is written as null."""
    store = _hide_class_in_validation(store, tmp_path, 1)
    absent = read_store_info(store).classes.names[1:2]
    assert read_store_info(store).counts("val")[:, 1].sum() == 0  # the forced NaN
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({k: v for k, v in TINY.items() if k != "epochs"}))
    out = tmp_path / "run"
    args = ["-q", "train", "--data", str(store), "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--epochs", "1", "--no-track"])
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout) == strict_json((out / "summary.json").read_text())
    lines = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0][f"val/accuracy/{absent[0]}"] is None
    manifest = strict_json((out / "model" / "terraseg_model.json").read_text())
    assert manifest["metadata"]["metrics"][f"val/accuracy/{absent[0]}"] is None
    written = [p for p in out.rglob("*") if p.suffix in (".json", ".jsonl")]
    assert len(written) == 3  # summary, metrics and the model description: all checked


def test_bench_train_reports_loader_overhead(store):
    args = ["bench", "train", "--data", str(store), "--width-multiplier", "0.25", "--crop-size",
            "32", "--batch-size", "2", "--steps", "2", "--num-workers", "1", "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("loader_only_samples_per_s", "train_zarr_samples_per_s",
                "train_memory_samples_per_s"):  # fmt: skip
        assert report[key] > 0
    assert report["loader_overhead"] < 1


class Recorder(NullTracker):
    def __init__(self):
        self.params, self.steps, self.artifacts, self.models = {}, [], [], []

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step):
        assert all(isinstance(v, float) for v in metrics.values())
        self.steps.append((step, metrics))

    def log_artifact(self, path, artifact_path=None):
        assert path.is_file()
        self.artifacts.append((path.name, artifact_path))

    def log_model(self, artifact_dir):
        self.models.append(artifact_dir)
        return "runs:/x/model"


def test_tracker_receives_params_metrics_plots_and_model(store, tmp_path, monkeypatch):
    real = records.scores
    mious = iter([0.5, 0.6, 0.55, 0.58, 0.7])
    monkeypatch.setattr(records, "scores", lambda m: {**real(m), "mean_iou": next(mious)})
    tracker = Recorder()
    summary = train_with(tracker, tiny(epochs=5, patience=2), store, tmp_path / "run")
    # early stopping: best at epoch 2, no better mIoU in epochs 3 and 4
    assert summary["epochs"] == 4 and summary["best_epoch"] == 2
    assert summary["model_uri"] == "runs:/x/model" and tracker.models == [
        tmp_path / "run" / "model"
    ]
    assert tracker.params["data.store"] == str(store) and "statistics.nir.std" in tracker.params
    epochs = [(s, m) for s, m in tracker.steps if "train/loss" in m and "best_epoch" not in m]
    assert [s for s, _ in epochs] == [1, 2, 3, 4]
    assert tracker.steps[-3][0] == 4 and "best/val/mean_iou" in tracker.steps[-3][1]
    # the headline: the best epoch's metrics after the last epoch; the last epoch's as last/*
    assert tracker.steps[-2] == (4, {f"last/{k}": v for k, v in epochs[3][1].items()})
    step, headline = tracker.steps[-1]
    assert step == 5 and headline == {**epochs[1][1], "best_epoch": 2.0, "last_epoch": 4.0}
    assert headline["val/mean_iou"] == 0.6 and tracker.steps[-2][1]["last/val/mean_iou"] == 0.58
    metrics = epochs[-1][1]
    for key in ("train/loss", "train/lr", "train/images_per_s", "val/mean_iou",
                "val/pixel_accuracy", "val/iou/background"):  # fmt: skip
        assert key in metrics
    for kind in ("iou", "accuracy", "f1"):  # classes absent from validation are left out (NaN)
        assert any(key.startswith(f"val/{kind}/") for key in metrics)
    names = {name for name, _ in tracker.artifacts}
    assert {"config.yaml", "confusion.png", "overlays.png", "curves.png"} <= names
