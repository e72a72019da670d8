"""Training through a tracking outage: what the store could not take waits in the run folder.

The store is checked before training starts (see
:func:`terraseg.pipeline.registry.check_tracking_reachable`). When a call to it fails later (the
server went away), MLflow retries briefly (:data:`HTTP_RETRIES`: a few seconds, not
MLflow's default of minutes), then training goes on: one warning says so, the calls that
follow are not sent, and every call that was not logged is kept in order in
``RUN/tracking_pending.jsonl``. At the end of training the kept calls are sent if the
store answers again; otherwise ``terraseg sync RUN`` sends them later, into the same
MLflow run, registering the model as the run's config asks. The training summary's
``tracking`` entry says what was not logged, and ``terraseg train`` exits with
:data:`TRACKING_INCOMPLETE` rather than 0, so that a workflow does not go on with a
model that was not registered.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from terraseg.pipeline.errors import InputError, TrackingError
from terraseg.pipeline.files import finite, remove_path, write_json
from terraseg.pipeline.registry import (
    check_tracking_reachable,
    connection_reason,
    redact,
    resolve_tracking_uri,
)
from terraseg.pipeline.training.tracker import Tracker
from terraseg.workflows.mlflow_tracking import (
    EPOCH_METRIC,
    HEADLINE_METRIC,
    MlflowTracker,
    read_run_id,
    start_tracking,
)

logger = logging.getLogger(__name__)

PENDING_FILE = "tracking_pending.jsonl"  # in the run folder: calls not logged, in order
TRACKING_INCOMPLETE = 3  # exit status of train (and sync) when something was not logged
# MLflow's HTTP retries for training processes, unless set: a server that is gone costs
# about two seconds (a hung one 30 s), not MLflow's default of 7 retries in 8 minutes.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def brief_http_retries() -> None:
    """Set :data:`HTTP_RETRIES` in this process's environment (inherited by its children).

    Values the user set are kept.
    """
    for name, value in HTTP_RETRIES.items():
        os.environ.setdefault(name, value)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the tracking store did not answer (not that a call was wrong)."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, RestException):  # the server answered: the call itself was refused
        return int(exc.get_http_status_code()) >= 500
    return isinstance(exc, MlflowException) and "API request to" in exc.message


class FallbackTracker:
    """An :class:`MlflowTracker` that keeps, in the run folder, what its store did not take.

    Args:
        inner: The tracker of the run's MLflow run.
        out: The run folder.
    """

    def __init__(self, inner: MlflowTracker, out: Path) -> None:
        self.inner, self.out = inner, Path(out)
        self.offline = False
        self.reason = ""
        self.model_uri: str | None = None  # of a model logged by :meth:`send_pending`
        if logging.getLogger().getEffectiveLevel() > logging.INFO:
            logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retries: one line here

    @property
    def pending(self) -> Path:
        """The file of calls not logged."""
        return self.out / PENDING_FILE

    def log_params(self, params: dict[str, Any]) -> None:
        """Record parameters (see :meth:`MlflowTracker.log_params`)."""
        self._send({"call": "params", "params": params}, self.inner.log_params, params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record metrics at ``step``."""
        entry = {"call": "metrics", "metrics": metrics, "step": step}
        self._send(entry, self.inner.log_metrics, metrics, step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Store a file with the run (a kept call sends the file as it is then)."""
        entry = {"call": "artifact", "path": str(Path(path).resolve()), "into": artifact_path}
        self._send(entry, self.inner.log_artifact, path, artifact_path)

    def log_dataset(self, path: str, digest: str, profile: dict[str, int]) -> None:
        """Record the training store."""
        entry = {"call": "dataset", "path": path, "digest": digest, "profile": profile}
        self._send(entry, self.inner.log_dataset, path, digest, profile)

    def log_model(self, artifact_dir: Path) -> str | None:
        """Log (and register) the model; ``None`` when that waits for the store."""
        entry = {"call": "model", "path": str(Path(artifact_dir).resolve())}
        uri: str | None = self._send(entry, self.inner.log_model, artifact_dir)
        return uri

    def _send(self, entry: dict[str, Any], call: Any, *args: Any) -> Any:
        if not self.offline:
            try:
                return call(*args)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self.go_offline(exc)
        _keep(self.pending, entry)
        return None

    def go_offline(self, exc: BaseException) -> None:
        """Stop sending; warn once that what follows waits in :attr:`pending`."""
        if self.offline:
            return
        uri = self.inner.tracking_uri
        self.offline = True
        self.reason = connection_reason(str(exc), uri)
        logger.warning(
            "the tracking store %s stopped answering (%s); training goes on, and what is "
            "not logged waits in %s",
            redact(uri),
            self.reason,
            self.pending,
        )

    def send_pending(self) -> None:
        """Send the kept calls if the store answers again (the MLflow run still open)."""
        if not self.offline:
            return
        try:
            check_tracking_reachable(self.inner.tracking_uri)
        except TrackingError:
            return
        try:
            self.model_uri = replay(self.pending, self.inner)
        except Exception as exc:
            if not is_outage(exc):
                raise
            return
        self.offline = False
        logger.warning("the tracking store answers again: what waited is logged")

    def outcome(self) -> dict[str, Any]:
        """The summary's ``tracking`` entry: what was not logged and how to send it."""
        entries = read_pending(self.pending) if self.pending.exists() else []
        register = self.inner.register
        return {
            "complete": False,
            "reason": self.reason,
            "not_logged": describe(entries),
            "registered": False if register else None,
            "pending": str(self.pending),
            "sync": f"terraseg sync {self.out}",
        }


def _keep(pending: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the pending file (strict JSON, flushed at once)."""
    with pending.open("a") as file:
        file.write(json.dumps(finite(entry), allow_nan=False) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_pending(pending: Path) -> list[dict[str, Any]]:
    """The calls kept in ``pending``, in order.

    Raises:
        InputError: The file is missing or damaged.
    """
    try:
        lines = pending.read_text().splitlines()
    except FileNotFoundError:
        raise InputError(
            "nothing to send: no calls wait for the tracking store", path=pending
        ) from None
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise InputError(f"damaged at line {exc.lineno}", path=pending) from None


def describe(entries: list[dict[str, Any]]) -> str:
    """What ``entries`` hold, for a person: ``epochs 2-3, the final metrics, 4 files, ...``."""
    metrics = [e for e in entries if e["call"] == "metrics"]
    per_epoch = [e for e in metrics if EPOCH_METRIC in e["metrics"]]
    per_epoch = [e for e in per_epoch if HEADLINE_METRIC not in e["metrics"]]
    epochs = sorted({int(e["step"]) for e in per_epoch})
    files = sum(e["call"] == "artifact" for e in entries)
    parts = []
    if epochs:
        span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
        parts.append(f"epoch{'s' if len(epochs) > 1 else ''} {span}")
    if len(per_epoch) < len(metrics):
        parts.append("the final metrics")
    if any(e["call"] == "params" for e in entries):
        parts.append("the parameters")
    if files:
        parts.append(f"{files} file{'s' if files > 1 else ''}")
    if any(e["call"] == "dataset" for e in entries):
        parts.append("the dataset")
    if any(e["call"] == "model" for e in entries):
        parts.append("the model")
    if any(e["call"] == "end" for e in entries):
        parts.append("the run's end")
    return ", ".join(parts) or "nothing"


def replay(pending: Path, tracker: MlflowTracker) -> str | None:
    """Send the calls kept in ``pending`` to ``tracker``'s run, then remove the file.

    A call that fails leaves it and the ones after it in the file, so a later replay
    sends nothing twice.

    Returns:
        The model's URI when a kept call logged it (``models:/NAME/VERSION`` when
        registered), else ``None``.
    """
    entries = read_pending(pending)
    model_uri = None
    for done, entry in enumerate(entries):
        try:
            model_uri = _call(tracker, entry) or model_uri
        except BaseException:
            _rewrite(pending, entries[done:])
            raise
    remove_path(pending)
    return model_uri


def _call(tracker: MlflowTracker, entry: dict[str, Any]) -> str | None:
    match entry["call"]:
        case "params":
            tracker.log_params(entry["params"])
        case "metrics":
            tracker.log_metrics(entry["metrics"], int(entry["step"]))
        case "artifact":
            tracker.log_artifact(Path(entry["path"]), entry["into"])
        case "dataset":
            tracker.log_dataset(entry["path"], entry["digest"], entry["profile"])
        case "model":
            return tracker.log_model(Path(entry["path"]))
        case "end":
            pass  # the run ends when the replaying context does
        case other:
            raise InputError(f"unknown kept call {other!r}", path=tracker.tracking_uri)
    return None


def _rewrite(pending: Path, entries: list[dict[str, Any]]) -> None:
    temporary = pending.with_name(pending.name + ".tmp")
    temporary.write_text("".join(json.dumps(e, allow_nan=False) + "\n" for e in entries))
    os.replace(temporary, pending)


@contextmanager
def keep_training_through_outages(
    tracking: AbstractContextManager[Tracker], out: Path
) -> Iterator[Tracker]:
    """``tracking``'s tracker, kept in a :class:`FallbackTracker` when it is MLflow's.

    The MLflow run is started (and the store checked) on entry, as without this.
    On exit the kept calls are sent if the store answers again; a run that cannot
    be ended because the store is gone is noted in the pending file (its end is sent
    with the rest). An error of the training itself is raised as it is, whatever
    the store does.
    """
    tracker = tracking.__enter__()
    if not isinstance(tracker, MlflowTracker):
        with _exiting(tracking, None):
            yield tracker
        return
    fallback = FallbackTracker(tracker, out)
    with _exiting(tracking, fallback):
        yield fallback
        fallback.send_pending()


@contextmanager
def _exiting(
    tracking: AbstractContextManager[Tracker], fallback: FallbackTracker | None
) -> Iterator[None]:
    """Exit ``tracking`` after the block; a store that is gone does not fail the run."""
    try:
        yield
    except BaseException:
        _leave(tracking, fallback, sys.exc_info())
        raise
    _leave(tracking, fallback, (None, None, None))


def _leave(
    tracking: AbstractContextManager[Tracker], fallback: FallbackTracker | None, info: Any
) -> None:
    try:
        tracking.__exit__(*info)
    except Exception as exc:
        if fallback is None or not is_outage(exc):
            raise
        fallback.go_offline(exc)
        status = "FINISHED" if info[0] is None else "FAILED"
        _keep(fallback.pending, {"call": "end", "status": status})


def amend_summary(summary: dict[str, Any], tracker: Tracker, out: Path) -> dict[str, Any]:
    """The training summary with what tracking left undone (``tracking``), also on disk.

    Unchanged when everything was logged, except for the model's URI when the model
    was logged at the end, once the store answered again.
    """
    if not isinstance(tracker, FallbackTracker) or not summary:
        return summary
    if tracker.offline:
        summary = {**summary, "tracking": tracker.outcome()}
    elif tracker.model_uri is not None:
        summary = {**summary, "model_uri": tracker.model_uri}
    else:
        return summary
    write_json(out / "summary.json", summary)
    return summary


def sync_run(out: Path, tracking_uri: str | None) -> dict[str, Any]:
    """Send what a training run folder keeps for its tracking store (``terraseg sync``).

    The calls go to the folder's MLflow run (reopened; epochs it holds are not logged
    twice), the model is registered as the run's config asks, and the run ends
    FINISHED. The summary's ``tracking`` entry goes, ``model_uri`` is set.

    Args:
        out: The training run folder.
        tracking_uri: The store; ``None``: ``MLFLOW_TRACKING_URI`` or MLflow's default.

    Returns:
        ``{"run": folder, "sent": what was sent, "model_uri": ...}``.

    Raises:
        InputError: Nothing waits in ``out``, or it is not a training run folder.
        TrackingError: The store cannot be reached (nothing is sent).
    """
    from terraseg.pipeline.settings import build_config, load_yaml
    from terraseg.pipeline.training.config import TrainConfig

    pending = Path(out) / PENDING_FILE
    entries = read_pending(pending)
    run_id = read_run_id(out)
    if run_id is None:
        raise InputError("not a tracked training run folder (no mlflow_run_id)", path=out)
    config = build_config(TrainConfig, load_yaml(Path(out) / "config.yaml"), {})
    tracking = config.tracking
    uri = resolve_tracking_uri(tracking_uri)
    try:
        with start_tracking(
            uri, tracking.experiment, None, tracking.register_as, tracking.alias, run_id=run_id
        ) as tracker:
            model_uri = replay(pending, tracker)
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise TrackingError(
            f"the tracking store {redact(uri)} stopped answering "
            f"({connection_reason(str(exc), uri)}); what was not sent waits in {pending}"
        ) from None
    if any(e["call"] == "end" and e["status"] != "FINISHED" for e in entries):
        _end_failed(uri, tracker.run_id)
    _settle_summary(Path(out), model_uri)
    return {"run": str(out), "mlflow_run": tracker.run_id, "sent": describe(entries),
            "model_uri": model_uri}  # fmt: skip


def _end_failed(uri: str, run_id: str) -> None:
    """Mark the run FAILED, as training ended it (its end could not be sent then)."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=uri).set_terminated(run_id, "FAILED")


def _settle_summary(out: Path, model_uri: str | None) -> None:
    path = out / "summary.json"
    if not path.exists():
        return
    summary = json.loads(path.read_text())
    summary.pop("tracking", None)
    if model_uri is not None:
        summary["model_uri"] = model_uri
    write_json(path, summary)
