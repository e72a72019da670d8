from typing import Literal

import pytest
from pydantic import Field

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.settings import StrictModel, build_config, load_yaml


class Optimizer(StrictModel):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)


class Train(StrictModel):
    epochs: int = 10
    batch_size: int = 8
    optimizer: Optimizer = Optimizer()


def test_precedence_cli_over_yaml_over_default(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 3\noptimizer:\n  lr: 0.5\n")
    config = build_config(Train, load_yaml(path), {"epochs": 7, "batch_size": None}, source=path)
    assert config.epochs == 7  # CLI beats YAML
    assert config.optimizer.lr == 0.5  # YAML beats default
    assert config.batch_size == 8  # unset option falls through to the default
    assert config.optimizer.name == "sgd"


def test_dotted_override_of_nested_key():
    config = build_config(Train, {"optimizer": {"lr": 0.2}}, {"optimizer.name": "adamw"})
    assert config.optimizer == Optimizer(name="adamw", lr=0.2)


def test_unknown_nested_key_names_dotted_path_and_allowed_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config(Train, {"optimizer": {"lrr": 1}}, source=tmp_path / "t.yaml")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "t.yaml") + ": optimizer.lrr: unknown key")
    assert "allowed keys: lr, name" in message


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"optimizer\.name: Input should be 'sgd' or 'adamw'"):
        build_config(Train, {"optimizer": {"name": "adam"}})


def test_bad_number_names_path_and_value():
    with pytest.raises(
        ConfigError, match=r"optimizer\.lr: Input should be greater than 0 \(got -1\)"
    ):
        build_config(Train, {}, {"optimizer.lr": -1})


def test_yaml_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: configuration file not found"):
        load_yaml(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML at line"):
        load_yaml(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(scalar)
    assert isinstance(ConfigError("x"), ValueError)
