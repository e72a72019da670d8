import numpy as np
import pytest
import torch

from terraseg.pipeline.artifact import ModelArtifact, Normalization, load_artifact, save_artifact
from terraseg.pipeline.classes import default_class_table
from terraseg.pipeline.errors import InputError
from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.model.deeplab import build_model


def test_artifact_round_trip_gives_the_same_outputs(tmp_path):
    config = ModelConfig(
        backbone="mobilenetv2", in_channels=4, num_classes=5, width_multiplier=0.25
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    artifact = ModelArtifact(
        model_config=config.model_dump(mode="json"), band_names=["red", "green", "blue", "nir"],
        normalization=Normalization([100.0, 90.0, 80.0, 120.0], [30.0, 25.0, 20.0, 40.0]),
        classes=default_class_table(), tile_size=64, state_dict=model.state_dict(),
        metadata={"run_id": "abc"},
    )  # fmt: skip
    save_artifact(artifact, tmp_path / "model")
    loaded = load_artifact(tmp_path / "model")
    assert loaded.manifest() == artifact.manifest()
    x = torch.from_numpy(loaded.normalization.apply(np.full((1, 4, 40, 40), 100, dtype=np.uint8)))
    with torch.inference_mode():
        np.testing.assert_array_equal(loaded.build_model()(x).numpy(), model(x).numpy())


def test_not_an_artifact(tmp_path):
    with pytest.raises(InputError, match="not a terraseg model"):
        load_artifact(tmp_path)
