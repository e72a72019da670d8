"""Epoch length from the store's size, and the recipe line a run starts with."""

from terraseg.pipeline.training.checkpoint import load_checkpoint
from terraseg.pipeline.training.components import steps_per_epoch
from terraseg.pipeline.training.config import DataConfig
from terraseg.pipeline.training.dataset import read_store_info
from terraseg.pipeline.training.tracker import NullTracker
from tests.pipeline.training.test_train import tiny


def test_small_stores_get_longer_epochs_than_one_crop_per_tile():
    default = DataConfig()
    assert steps_per_epoch(default, train_tiles=27, per_step=8) == 8  # 4 by tile count
    assert steps_per_epoch(default, train_tiles=105, per_step=8) == 14  # by tile count
    assert steps_per_epoch(default, train_tiles=105, per_step=16) == 8
    given = DataConfig(samples_per_epoch=20)
    assert steps_per_epoch(given, train_tiles=1000, per_step=8) == 3  # as asked, rounded up
    assert steps_per_epoch(DataConfig(min_steps_per_epoch=1), 3, 8) == 1


def test_run_announces_its_recipe_and_trains_the_steps_it_names(store, tmp_path, capsys):
    from terraseg.pipeline.training.session import run_training
    from terraseg.workflows.train_run import init_distributed

    settings = {"data.samples_per_epoch": 0, "data.min_steps_per_epoch": 3, "epochs": 1}
    config = tiny(**settings, int8_calibration=0, overlays=0, **{"model.members": 0})
    tiles = len(read_store_info(store, config.data.min_valid_fraction).train)
    steps = max(3, -(-tiles // config.data.batch_size))
    place = init_distributed("cpu")
    summary = run_training(
        config, store, tmp_path / "run", place=place, tracker=NullTracker(), progress=True
    )
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("training on"))
    assert f"training on {tiles} tiles" in line
    assert f"1 epoch of {steps} steps ({steps * 2} crops of 32 px, batch 2 x 1 process)" in line
    assert (
        "mobilenetv2 width 0.25 stride 16 full-resolution head (3 pixel layers), an "
        "ensemble of 3 (predicts 3x as long);" in line
    )  # automatic: a small store
    assert "adamw lr 0.02" in line and "class weights inverse_sqrt" in line
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == steps
    assert summary["steps_per_epoch"] == steps
