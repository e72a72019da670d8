"""The MLflow run context: what the trainer reports to, on the main rank only.

``with start_tracking(tracking_uri, experiment, ...) as tracker:`` checks the
tracking store first (a server that does not answer fails in seconds, naming the
URI), starts a run (or reopens one, given its id) and yields an
:class:`MlflowTracker`. The run ends FINISHED, or FAILED when the block raises.
``tracker.log_model(folder)`` logs a model artifact folder as a ``pyfunc`` model
named ``model`` (``runs:/RUN_ID/model``) and, with ``register``, registers it as a
new version and points ``alias`` at it.

A training run folder keeps the id of its MLflow run in ``RUN/mlflow_run_id``
(:func:`track_run_folder`): ``train --resume`` reopens that run, so one MLflow run
holds every epoch however often training was stopped and resumed. A run whose
process was killed stays RUNNING in the store; a new training run in the same
folder marks it KILLED.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from terraseg.pipeline import __version__
from terraseg.pipeline.artifact import load_artifact
from terraseg.pipeline.errors import ConfigError, TrackingError
from terraseg.pipeline.files import finite, write_text
from terraseg.pipeline.registry import (
    MLMODEL_METADATA_KEY,
    PYFUNC_ARTIFACT_KEY,
    check_tracking_reachable,
    redact,
    resolve_tracking_uri,
    sqlite_path,
    use_tracking_uri,
    version_card,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from terraseg.pipeline.training.config import TrackingConfig

__all__ = [
    "RUN_ID_FILE",
    "MlflowTracker",
    "check_tracking_reachable",
    "movable_experiment",
    "read_run_id",
    "start_tracking",
    "track_run_folder",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name in its run: runs:/RUN_ID/model
_UNSAFE_KEY = re.compile(r"[^\w\-./ :]")  # characters MLflow refuses in keys
RUN_ID_FILE = "mlflow_run_id"  # in a training run folder: the id of its MLflow run
EPOCH_METRIC = "train/loss"  # logged at every epoch (always finite): its steps are the epochs
HEADLINE_METRIC = "best_epoch"  # logged with the headline, one step after the last epoch
GIT_COMMIT_PARAM = (
    "code.git_commit"  # the parameter of terraseg.pipeline.training.tracker.code_version
)
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's standard tag for it
# The MLflow UI's kind of experiment: model training (its runs page), not GenAI traces.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
ARTIFACT_FOLDER = "mlruns"  # next to an SQLite store: the artifacts of its experiments


class MlflowTracker:
    """A :class:`~terraseg.pipeline.training.tracker.Tracker` that records into one MLflow run.

    Create it with :func:`start_tracking`; the run must be MLflow's active run when
    :meth:`log_model` is called. In a reopened run (see :meth:`recall`), epochs and
    parameters the run holds already are not logged again.
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
        self.params_before: dict[str, str] = {}  # what a reopened run held
        self.epochs_before: set[int] = set()

    def recall(self) -> None:
        """Note the parameters and the epochs with metrics that the run holds already."""
        run = self.client.get_run(self.run_id)
        self.params_before = dict(run.data.params)
        history = self.client.get_metric_history(self.run_id, EPOCH_METRIC)
        headlines = self.client.get_metric_history(self.run_id, HEADLINE_METRIC)
        self.epochs_before = {int(m.step) for m in history} - {int(m.step) for m in headlines}

    @property
    def tracking_uri(self) -> str:
        """The tracking store this run lives in."""
        return str(self.client.tracking_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        """Record flat ``{dotted.key: value}`` parameters, as text cut at MLflow's limit.

        MLflow keeps a parameter's first value; in a reopened run a parameter
        whose value changed (say ``epochs`` raised for the resume) is recorded as
        the tag ``terraseg.resumed_with.KEY`` instead.
        """
        from mlflow.entities import Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        text = {_key(k): str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
        before = self.params_before
        entries = [Param(k, v) for k, v in text.items() if k not in before]
        tags = [
            RunTag(f"terraseg.resumed_with.{k}", v)
            for k, v in text.items()
            if k in before and before[k] != v
        ]
        if GIT_COMMIT_PARAM in text:  # where MLflow's UI and tools look for the commit
            tags.append(RunTag(MLFLOW_GIT_COMMIT, text[GIT_COMMIT_PARAM]))
        self.client.log_batch(self.run_id, params=entries, tags=tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record metric values at ``step`` (the epoch), unless a reopened run has that epoch."""
        from mlflow.entities import Metric

        if step in self.epochs_before:
            return
        now = int(time.time() * 1000)
        entries = [Metric(_key(k), float(v), now, int(step)) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Store a file (a plot, the config, an overlay image) with the run."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, path: str, digest: str, profile: dict[str, int]) -> None:
        """Record the training store as the run's dataset, in context ``training``.

        An MLflow dataset of metadata only: named after the store's folder, its
        source the store's path, its digest :func:`~terraseg.pipeline.store.store_digest`,
        its profile the tile counts. A path MLflow has no dataset source for is
        recorded as the tag ``training_store`` instead, with a warning.
        """
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.exceptions import MlflowException

        self._check_active("log_dataset")
        try:
            with warnings.catch_warnings():  # a local path matches two equal sources
                warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
                source = resolve_dataset_source(path)
        except MlflowException as exc:
            logger.warning("MLflow has no dataset source for %s (%s)", path, exc.message)
            self.client.set_tag(self.run_id, "training_store", path)
            return
        name = Path(path.rstrip("/")).name or path
        dataset = _store_dataset()(source, name=name, digest=digest)
        dataset.store_profile = profile
        mlflow.log_input(dataset, context="training")

    def _check_active(self, what: str) -> None:
        """Refuse MLflow's fluent calls outside this run (they act on the active run)."""
        import mlflow

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError(f"{what} must be called inside start_tracking()")

    def log_model(self, artifact_dir: Path) -> str:
        """Log a model artifact folder as a ``pyfunc`` model, and register it if asked.

        Args:
            artifact_dir: A folder written by :func:`terraseg.pipeline.artifact.save_artifact`.

        Returns:
            ``models:/NAME/VERSION`` when registered, else ``runs:/RUN_ID/model``.

        Raises:
            InputError: ``artifact_dir`` is not a model artifact.
        """
        import mlflow

        self._check_active("log_model")
        with pyfunc_arguments(artifact_dir) as arguments, warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME, registered_model_name=self.register, **arguments
            )
        if not self.register:
            return f"runs:/{self.run_id}/{MODEL_NAME}"
        version = str(info.registered_model_version)
        self._describe_version(version, arguments["metadata"][MLMODEL_METADATA_KEY])
        if self.alias:
            self.client.set_registered_model_alias(self.register, self.alias, version)
        logger.info("registered %s version %s (%s)", self.register, version, self.alias or "-")
        return f"models:/{self.register}/{version}"

    def _describe_version(self, version: str, manifest: dict[str, Any]) -> None:
        """Give the registered version its description and tags (see :func:`version_card`)."""
        assert self.register is not None
        card = version_card(manifest)
        for key, value in card.tags.items():
            self.client.set_model_version_tag(self.register, version, key, value)
        self.client.update_model_version(self.register, version, description=card.description)


@contextmanager
def pyfunc_arguments(artifact_dir: Path) -> Iterator[dict[str, Any]]:
    """The arguments of ``mlflow.pyfunc.log_model`` (or ``save_model``) for a model folder.

    The model's code is :mod:`terraseg.pipeline.pyfunc_entry`, with the terraseg package's
    source (written to a temporary folder that lasts as long as the block) as
    ``code_paths``; its requirements are mlflow, torch and numpy (:func:`pip_requirements`);
    its metadata holds the artifact's manifest and what ``predict`` accepts. No input
    example is logged: MLflow checks one in its JSON form, where a float32 image
    arrives as float64, which the model refuses.

    Args:
        artifact_dir: A folder written by :func:`terraseg.pipeline.artifact.save_artifact`.

    Yields:
        Keyword arguments for ``mlflow.pyfunc.log_model`` or ``save_model``.

    Raises:
        InputError: ``artifact_dir`` is not a model artifact.
    """
    from terraseg.pipeline.pyfunc import (
        ENTRY_FILE,
        INPUT_METADATA_KEY,
        input_description,
        signature_for,
        write_package_source,
    )

    artifact = load_artifact(artifact_dir)
    with tempfile.TemporaryDirectory(prefix="terraseg-code-") as code:
        yield {
            "python_model": str(ENTRY_FILE),
            "artifacts": {PYFUNC_ARTIFACT_KEY: str(artifact_dir)},
            "code_paths": [str(write_package_source(Path(code)))],
            "signature": signature_for(artifact),
            "pip_requirements": pip_requirements(),
            "metadata": {
                MLMODEL_METADATA_KEY: finite(artifact.manifest()),
                INPUT_METADATA_KEY: input_description(artifact),
            },
        }


@contextmanager
def start_tracking(
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None = None,
    register: str | None = None,
    alias: str | None = None,
    *,
    run_id: str | None = None,
) -> Iterator[MlflowTracker]:
    """Check the tracking store, start a run in ``experiment`` or reopen one; yield its tracker.

    Args:
        tracking_uri: The store; ``None``: ``MLFLOW_TRACKING_URI`` or MLflow's default.
        experiment: Experiment name, created when missing.
        run_name: The run's name (MLflow makes one up when ``None``).
        register: Register the logged model under this name.
        alias: Point this alias (e.g. ``candidate``) at the registered version.
        run_id: Reopen this run instead of starting one; it keeps its experiment
            and name. A run the store does not hold (or holds deleted) is not
            reopened: a new run starts, with a warning.

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
        tags = {"terraseg.version": __version__}
        reopen = run_id if run_id and _run_exists(mlflow_client, run_id, uri) else None
        experiment_id = None if reopen else _experiment_id(mlflow_client, experiment, uri)
        _check_artifact_home(mlflow_client, experiment_id or _run_experiment(mlflow_client, reopen))
        name = None if reopen else run_name  # a reopened run keeps its experiment and name
        with mlflow.start_run(
            run_id=reopen, experiment_id=experiment_id, run_name=name, tags=tags
        ) as run:
            verb = "reopened" if reopen else "started"
            logger.info("MLflow run %s %s (%s)", run.info.run_id, verb, redact(uri))
            tracker = MlflowTracker(mlflow_client, run.info.run_id, register, alias)
            if reopen:
                tracker.recall()
            yield tracker


def _run_exists(mlflow_client: MlflowClient, run_id: str, uri: str) -> bool:
    """Whether the store holds run ``run_id``, not deleted; a warning when not."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException:
        logger.warning("MLflow run %s is not in %s; a new run starts", run_id, redact(uri))
        return False
    if run.info.lifecycle_stage == "deleted":
        logger.warning("MLflow run %s is deleted in %s; a new run starts", run_id, redact(uri))
        return False
    return True


def read_run_id(folder: Path) -> str | None:
    """The id of the MLflow run of the training run folder ``folder``, if it has one."""
    path = Path(folder) / RUN_ID_FILE
    text = path.read_text().strip() if path.is_file() else ""
    return text or None


def end_abandoned_run(tracking_uri: str | None, run_id: str) -> None:
    """Mark run ``run_id`` KILLED if it is still RUNNING: its process died without ending it.

    Args:
        tracking_uri: The store; ``None``: ``MLFLOW_TRACKING_URI`` or MLflow's default.
        run_id: The run of a former training run in the same folder.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        status = mlflow_client.get_run(run_id).info.status
    except MlflowException:
        return  # not in this store: nothing to end
    if status == "RUNNING":
        mlflow_client.set_terminated(run_id, "KILLED")
        logger.warning("MLflow run %s was left running by a killed process; marked KILLED", run_id)


@contextmanager
def track_run_folder(
    tracking_uri: str | None,
    tracking: TrackingConfig,
    folder: Path,
    *,
    resume: bool,
    former: str | None,
) -> Iterator[MlflowTracker]:
    """The MLflow run of the training run folder ``folder``: its former run when resuming.

    The run's id is written to ``folder/mlflow_run_id`` as soon as it starts.

    Args:
        tracking_uri: The store; ``None``: ``MLFLOW_TRACKING_URI`` or MLflow's default.
        tracking: The ``tracking`` section of the training config.
        folder: The run folder.
        resume: Reopen the run ``former`` (training continues from a checkpoint).
        former: The id the folder held before this command (read before a
            ``--overwrite`` removed it). Without ``resume``, that run is ended
            KILLED if it is still RUNNING, and a new run starts.
    """
    if former and not resume:
        end_abandoned_run(tracking_uri, former)
    with start_tracking(
        tracking_uri,
        tracking.experiment,
        tracking.run_name,
        tracking.register_as,
        tracking.alias,
        run_id=former if resume else None,
    ) as tracker:
        write_text(Path(folder) / RUN_ID_FILE, tracker.run_id + "\n")
        yield tracker


def _experiment_id(mlflow_client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created when missing.

    In an SQLite store a new experiment keeps its artifacts in ``mlruns`` next to
    the database file (MLflow's default is ``./mlruns`` of the working directory;
    the two agree for the default store). The experiment is tagged as one of
    model training (see :data:`EXPERIMENT_TAGS`), a former one too when it has no kind.
    """
    from mlflow.exceptions import MlflowException

    try:
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            location = _artifact_location(uri)
            return str(mlflow_client.create_experiment(name, location, tags=EXPERIMENT_TAGS))
        for key, value in EXPERIMENT_TAGS.items():
            if key not in experiment.tags and experiment.lifecycle_stage != "deleted":
                mlflow_client.set_experiment_tag(experiment.experiment_id, key, value)
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
    store = sqlite_path(uri)
    return None if store is None else (store.absolute().parent / ARTIFACT_FOLDER).as_uri()


def movable_experiment(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``; created, in an SQLite store, with movable artifacts.

    A new experiment in an SQLite store keeps its artifacts in ``mlruns/ID``
    relative to the store's folder: MLflow stores every run's and model's artifact
    location relative to the experiment's, so the folder holding the database and
    ``mlruns`` can be moved or copied whole. MLflow reads a relative location
    against its working directory: ``mlflow ui`` is started in that folder, and
    runs that write into the experiment run there (:func:`start_tracking` refuses
    others); terraseg reads the models from anywhere (see
    :func:`terraseg.pipeline.registry.artifact_path`). In other stores, and for an
    experiment that exists, this is :func:`start_tracking`'s experiment.

    Raises:
        TrackingError: The store cannot be reached or used.
        ConfigError: The experiment is deleted.
    """
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_reachable(uri)
    mlflow_client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    existed = mlflow_client.get_experiment_by_name(name) is not None
    experiment_id = _experiment_id(mlflow_client, name, uri)
    store = sqlite_path(uri)
    if store is None or existed:
        return experiment_id
    with closing(sqlite3.connect(store)) as database, database:
        done = database.execute(  # MLflow resolves a relative location it is given: set here
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
            (f"{ARTIFACT_FOLDER}/{experiment_id}", int(experiment_id)),
        )
    if done.rowcount != 1:
        raise TrackingError(f"tracking store {uri}: cannot set experiment {name!r}'s artifacts")
    return experiment_id


def _run_experiment(mlflow_client: MlflowClient, run_id: str | None) -> str:
    assert run_id is not None
    return str(mlflow_client.get_run(run_id).info.experiment_id)


def _check_artifact_home(mlflow_client: MlflowClient, experiment_id: str) -> None:
    """Refuse to write a movable experiment's artifacts from outside its store's folder.

    Raises:
        ConfigError: The experiment's artifact location is relative and the working
            directory is not the SQLite store's folder.
    """
    location = str(mlflow_client.get_experiment(experiment_id).artifact_location)
    store = sqlite_path(str(mlflow_client.tracking_uri))
    if store is None or urlsplit(location).scheme or Path(location).is_absolute():
        return
    home = store.absolute().parent
    if Path.cwd().resolve() != home.resolve():
        raise ConfigError(
            f"experiment {experiment_id} keeps its artifacts in {location} relative to "
            f"{home}, where its store is; run terraseg in that folder (cd {home})"
        )


def _store_dataset() -> type[Any]:
    """MLflow's metadata-only dataset, with the store's tile counts as its profile."""
    from mlflow.data.meta_dataset import MetaDataset

    class StoreDataset(MetaDataset):
        store_profile: dict[str, int] | None = None

        @property
        def profile(self) -> dict[str, int] | None:
            """Scenes and tiles of the store, by split."""
            return self.store_profile

        def to_dict(self) -> dict[str, str]:
            """MLflow's record of the dataset, with the profile as JSON."""
            record: dict[str, str] = super().to_dict()
            if self.store_profile is not None:
                record["profile"] = json.dumps(self.store_profile)
            return record

    return StoreDataset


def pip_requirements() -> list[str]:
    """What a fresh environment needs to serve a logged model: mlflow, torch and numpy.

    terraseg itself travels with the model as code (see
    :func:`terraseg.pipeline.pyfunc.write_package_source`). torch is pinned by release,
    without a local label such as ``+cpu`` or ``+cu128``, so that the index installs it.
    """
    import mlflow
    import torch

    torch_release = str(torch.__version__).split("+")[0]
    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch_release}",
        f"numpy=={np.__version__}",
    ]


def _key(key: str) -> str:
    return _UNSAFE_KEY.sub("_", key)
