"""The MLflow run context: what the trainer reports to, on the main rank only.

``with start_tracking(tracking_uri, experiment, ...) as tracker:`` checks the
tracking store first (a server that does not answer fails in seconds, naming the
URI), starts a run and yields an :class:`MlflowTracker`. The run ends FINISHED, or
FAILED when the block raises. ``tracker.log_model(folder)`` logs a model artifact
folder as a ``pyfunc`` model named ``model`` (``runs:/RUN_ID/model``) and, with
``register``, registers it as a new version and points ``alias`` at it.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import __version__
from pipeline.artifact import load_artifact
from pipeline.errors import ConfigError, TrackingError
from pipeline.registry import (
    MLMODEL_METADATA_KEY,
    PYFUNC_ARTIFACT_KEY,
    check_tracking_reachable,
    redact,
    resolve_tracking_uri,
    use_tracking_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MlflowTracker", "check_tracking_reachable", "start_tracking"]

logger = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name in its run: runs:/RUN_ID/model
EXAMPLE_SIZE = 32  # rows and cols of the input example stored with the model
_UNSAFE_KEY = re.compile(r"[^\w\-./ :]")  # characters MLflow refuses in keys


class MlflowTracker:
    """A :class:`~pipeline.training.tracker.Tracker` that records into one MLflow run.

    Create it with :func:`start_tracking`; the run must be MLflow's active run when
    :meth:`log_model` is called.
    """

    def __init__(
        self,
        mlflow_client: MlflowClient,
        run_id: str,
        register: str | None = None,
        alias: str | None = None,
    ) -> None:
        self.client = mlflow_client
        self.run_id = run_id
        self.register = register
        self.alias = alias

    @property
    def tracking_uri(self) -> str:
        """The tracking store this run lives in."""
        return str(self.client.tracking_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        """Record flat ``{dotted.key: value}`` parameters, as text cut at MLflow's limit."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        entries = [Param(_key(k), str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        self.client.log_batch(self.run_id, params=entries)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record metric values at ``step`` (the epoch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(_key(k), float(v), now, int(step)) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Store a file (a plot, the config, an overlay image) with the run."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, artifact_dir: Path) -> str:
        """Log a model artifact folder as a ``pyfunc`` model, and register it if asked.

        Args:
            artifact_dir: A folder written by :func:`pipeline.artifact.save_artifact`.

        Returns:
            ``models:/NAME/VERSION`` when registered, else ``runs:/RUN_ID/model``.

        Raises:
            InputError: ``artifact_dir`` is not a model artifact.
        """
        import mlflow

        from pipeline.pyfunc import ENTRY_FILE, signature_for

        artifact = load_artifact(artifact_dir)
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError("log_model must be called inside start_tracking()")
        example = np.zeros(
            (1, len(artifact.band_names), EXAMPLE_SIZE, EXAMPLE_SIZE), dtype=artifact.input_dtype
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(ENTRY_FILE),
                artifacts={PYFUNC_ARTIFACT_KEY: str(artifact_dir)},
                signature=signature_for(artifact),
                input_example=example,
                pip_requirements=_pip_requirements(),
                metadata={MLMODEL_METADATA_KEY: artifact.manifest()},
                registered_model_name=self.register,
            )
        if not self.register:
            return f"runs:/{self.run_id}/{MODEL_NAME}"
        version = str(info.registered_model_version)
        if self.alias:
            self.client.set_registered_model_alias(self.register, self.alias, version)
        logger.info("registered %s version %s (%s)", self.register, version, self.alias or "-")
        return f"models:/{self.register}/{version}"


@contextmanager
def start_tracking(
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None = None,
    register: str | None = None,
    alias: str | None = None,
) -> Iterator[MlflowTracker]:
    """Check the tracking store, start a run in ``experiment`` and yield its tracker.

    Args:
        tracking_uri: The store; ``None``: ``MLFLOW_TRACKING_URI`` or MLflow's default.
        experiment: Experiment name, created when missing.
        run_name: The run's name (MLflow makes one up when ``None``).
        register: Register the logged model under this name.
        alias: Point this alias (e.g. ``candidate``) at the registered version.

    Raises:
        TrackingError: The store cannot be reached or used; raised before the run starts.
        ConfigError: ``alias`` without ``register``, or a deleted experiment.
    """
    import mlflow

    if alias and not register:
        raise ConfigError("an alias needs a registered model name (--register NAME)")
    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_reachable(uri)
    mlflow_client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    with use_tracking_uri(uri):
        experiment_id = _experiment_id(mlflow_client, experiment, uri)
        tags = {"terraseg.version": __version__}
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            logger.info("MLflow run %s in %s (%s)", run.info.run_id, experiment, redact(uri))
            yield MlflowTracker(mlflow_client, run.info.run_id, register, alias)


def _experiment_id(mlflow_client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created when missing.

    In an SQLite store a new experiment keeps its artifacts in ``mlruns`` next to
    the database file (MLflow's default is ``./mlruns`` of the working directory;
    the two agree for the default store).
    """
    from mlflow.exceptions import MlflowException

    try:
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            return str(mlflow_client.create_experiment(name, _artifact_location(uri)))
    except MlflowException as exc:
        raise TrackingError(f"tracking store {redact(uri)}: {exc.message}") from exc
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(
            f"experiment {name!r} is deleted in {redact(uri)}: restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
            "or choose another name"
        )
    return str(experiment.experiment_id)


def _artifact_location(uri: str) -> str | None:
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).absolute().parent / "mlruns").as_uri()


def _pip_requirements() -> list[str]:
    """What a fresh environment needs to serve the model."""
    import mlflow
    import torch

    torch_release = str(torch.__version__).split("+")[0]
    return [
        f"terraseg=={__version__}",
        f"torch=={torch_release}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]


def _key(key: str) -> str:
    return _UNSAFE_KEY.sub("_", key)
