"""Every file in configs/ is valid for the model of the command it configures."""

from pathlib import Path

import pytest

from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.settings import build_config, load_yaml
from terraseg.pipeline.synth.config import SynthConfig
from terraseg.pipeline.tiling import TileConfig
from terraseg.pipeline.vectorize.config import VectorizeConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {
    "synth.yaml": SynthConfig,
    "tile.yaml": TileConfig,
    "model.yaml": ModelConfig,
    "predict.yaml": PredictConfig,
    "vectorize.yaml": VectorizeConfig,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_file_is_valid_and_equals_defaults(name):
    model = MODELS[name]
    config = build_config(model, load_yaml(CONFIGS / name), source=CONFIGS / name)
    assert config == model()  # the documented file states the defaults
