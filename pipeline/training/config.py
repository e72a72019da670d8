"""Settings of ``terraseg train``: model, data, augmentation, loss, optimizer, schedule."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.settings import StrictModel

Accelerator = Literal["auto", "cpu", "cuda"]
Precision = Literal["bf16", "fp16", "fp32"]


class DataConfig(StrictModel):
    """How crops are drawn from the store and batched."""

    crop_size: int = Field(
        default=512, ge=16, description="Training crop side in pixels (<= tile size)."
    )
    batch_size: int = Field(
        default=8, ge=2, description="Crops per process and step (BN needs >= 2)."
    )
    val_batch_size: int = Field(
        default=8, ge=1, description="Validation tiles per process and batch."
    )
    samples_per_epoch: int = Field(
        default=0,
        ge=0,
        description="Training crops per epoch over all processes (0: one per tile).",
    )
    min_steps_per_epoch: int = Field(
        default=8,
        ge=1,
        description="With samples_per_epoch 0, an epoch is at least this many optimizer "
        "steps (a store of few tiles otherwise trains a few steps an epoch).",
    )
    class_balance: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="0: tiles drawn uniformly; 1: by inverse class frequency.",
    )
    min_valid_fraction: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Tiles with fewer labelled pixels are never drawn.",
    )
    num_workers: int = Field(
        default=2, ge=0, description="DataLoader worker processes per process."
    )
    prefetch_factor: int = Field(default=4, ge=1, description="Batches each worker prepares ahead.")
    normalization: Literal["mean_std", "percentile"] = Field(
        default="mean_std",
        description="Per-band scaling: mean_std, or percentile (centre and spread of the "
        "2nd-98th percentiles, less moved by clouds and stray values).",
    )


class AugmentConfig(StrictModel):
    """Augmentations, applied identically to image and label."""

    dihedral: bool = Field(
        default=True, description="Random one of the 8 flips and 90-degree rotations."
    )
    scale_min: float = Field(default=0.75, gt=0.0, description="Smallest zoom factor of a crop.")
    scale_max: float = Field(default=1.25, gt=0.0, description="Largest zoom factor of a crop.")
    brightness: float = Field(
        default=0.1, ge=0.0, description="Max per-band shift, in band std units."
    )
    contrast: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Max per-band relative gain change."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AugmentConfig:
        if self.scale_min > self.scale_max:
            raise ValueError("scale_min must not exceed scale_max")
        return self


class LossConfig(StrictModel):
    """Cross-entropy over labelled pixels, optional class weights and Dice term."""

    class_weights: Literal["none", "inverse", "inverse_sqrt"] = Field(
        default="inverse_sqrt",
        description="Class weights from the training tiles' class histograms.",
    )
    dice_weight: float = Field(
        default=0.0, ge=0.0, description="Weight of a soft Dice term (0: none)."
    )


class OptimizerConfig(StrictModel):
    """The optimizer: AdamW by default (better from scratch on the dev set), or the paper's SGD."""

    name: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(default=0.002, gt=0.0, description="Peak learning rate (after warm-up).")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(
        default=1e-4, ge=0.0, description="Decay of conv and linear weights."
    )
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(default=0.0, ge=0.0, description="Max global gradient norm (0: off).")
    accumulate: int = Field(default=1, ge=1, description="Batches per optimizer step.")


class ScheduleConfig(StrictModel):
    """Learning-rate schedule over optimizer steps."""

    name: Literal["poly", "cosine"] = "cosine"
    power: float = Field(default=0.9, gt=0.0, description="Poly decay: lr * (1 - t/T) ** power.")
    warmup_epochs: float = Field(
        default=0.3, ge=0.0, description="Linear warm-up length in epochs."
    )
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="Floor, relative to lr.")


class TrackingConfig(StrictModel):
    """Where a run is recorded; the store itself is MLFLOW_TRACKING_URI or --tracking-uri."""

    enabled: bool = Field(
        True, description="Record the run in MLflow (false: only the output folder)."
    )
    experiment: str = Field("terraseg", min_length=1, description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name (default: MLflow's).")
    register_as: str | None = Field(
        None, description="Register the model as a new version of this name."
    )
    alias: str | None = Field(
        None, description="Point this alias (e.g. candidate) at the new version."
    )


class TrainConfig(StrictModel):
    """Everything a training run depends on; stored in every checkpoint."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(backbone="mobilenetv2"))
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    epochs: int = Field(default=30, ge=1, description="Training epochs.")
    patience: int = Field(
        default=0, ge=0, description="Stop after this many epochs without a better mIoU."
    )
    seed: int = Field(default=0, ge=0, description="Seed of weights, crops and augmentations.")
    accelerator: Accelerator = "auto"
    devices: int = Field(
        default=1, ge=1, description="Processes (one per GPU) started on this machine."
    )
    precision: Precision = Field(
        default="bf16", description="Autocast dtype on CUDA (CPU runs fp32)."
    )
    channels_last: bool = Field(default=True, description="channels_last memory format on CUDA.")
    compile: bool = Field(default=False, description="torch.compile the model.")
    threads: int = Field(
        default=0, ge=0, description="CPU threads per process (0: torch's default)."
    )
    overlays: int = Field(
        default=4, ge=0, description="Validation overlays plotted at the best epoch."
    )
    int8_calibration: int = Field(
        default=32,
        ge=0,
        description="Validation tiles (training tiles without a validation split) whose "
        "activations calibrate the model for int8 prediction (0: none).",
    )
