"""The recipe a run trains with, in one line: what the defaults and the store made of it."""

from __future__ import annotations

from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.dataset import StoreInfo


def describe_recipe(
    config: TrainConfig, info: StoreInfo, model: ModelConfig, steps: int, world: int
) -> str:
    """One line: store, crops and steps per epoch, model, optimizer, schedule and loss.

    The figures are the resolved ones (crop side cut to the tile size, epoch length
    from the store's tile count), so a user sees what the defaults chose.

    Args:
        config: The training config.
        info: The store trained on.
        model: The model config with the store's bands and classes.
        steps: Optimizer steps per epoch.
        world: Training processes.
    """
    data, opt = config.data, config.optimizer
    crops = steps * data.batch_size * world * opt.accumulate
    crop = min(data.crop_size, info.tile_size)
    head = "stride-4 head"
    if model.full_resolution:
        layers = model.pixel_layers
        head = f"full-resolution head ({layers} pixel layer{'s' if layers > 1 else ''})"
    ensemble = ""
    if model.members > 1:
        ensemble = f", an ensemble of {model.members} (predicts {model.members}x as long)"
    return (
        f"training on {len(info.train)} tiles ({len(info.val)} validation) of "
        f"{info.tile_size} px, {len(info.band_names)} bands, {info.num_classes} classes: "
        f"{config.epochs} epoch{'s' if config.epochs > 1 else ''} of {steps} steps "
        f"({crops} crops of {crop} px, batch "
        f"{data.batch_size} x {world} process{'es' if world > 1 else ''}); "
        f"{model.backbone} width {model.width_multiplier:g} stride {model.output_stride} "
        f"{head}{ensemble}; {opt.name} lr {opt.lr:g} wd {opt.weight_decay:g}, "
        f"{config.schedule.name} schedule; class weights {config.loss.class_weights}; "
        f"{data.normalization} normalization"
    )
