"""Models by URI: load, describe, list and promote terraseg models in MLflow.

A model URI is one of

- ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION``: a registered model version;
- ``runs:/RUN_ID/model``: the model logged by a training run;
- a local folder: a model artifact (``terraseg_model.json`` + ``weights.pt``) or a
  downloaded MLflow model that holds one.

The tracking store is ``tracking_uri`` when given, else ``MLFLOW_TRACKING_URI``,
else MLflow's default: ``sqlite:///mlflow.db`` in the working directory (MLflow 3
falls back to ``./mlruns`` only when that folder already holds runs of an older
MLflow). Servers are asked for ``/health`` with a short timeout first, so a wrong
URI fails in seconds instead of after MLflow's retries.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from terraseg.pipeline.artifact import MANIFEST, ModelArtifact, load_artifact
from terraseg.pipeline.errors import InputError, ModelNotFoundError, TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

REACH_TIMEOUT = 5.0  # seconds to wait for a tracking server's /health
PYFUNC_ARTIFACT_KEY = "terraseg_model"  # key of the artifact folder in the pyfunc model
MLMODEL_METADATA_KEY = "terraseg"  # the artifact manifest, copied into MLmodel's metadata
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy stores other than SQLite


@dataclass(frozen=True)
class ModelRef:
    """A registered model version reference: ``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION``."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``[models:/]NAME[@ALIAS|/VERSION]``.

        Raises:
            InputError: The name is empty or the version is not a number.
        """
        body = text.removeprefix("models:/").strip("/")
        name, _, alias = body.partition("@")
        name, _, version = name.partition("/")
        if not name or (version and not version.isdigit()) or (alias and version):
            raise InputError(
                f"cannot read model reference {text!r}: use NAME, NAME@ALIAS or NAME/VERSION"
            )
        return cls(name, alias or None, version or None)


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default store.

    A relative SQLite path is made absolute, so that other processes (Dask
    workers, training ranks) with another working directory find the same file.
    """
    if not tracking_uri:
        import mlflow

        tracking_uri = str(mlflow.get_tracking_uri())
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not tracking_uri.startswith(prefix + "/"):
        return prefix + str(Path(tracking_uri.removeprefix(prefix)).resolve())
    return tracking_uri


def redact(uri: str) -> str:
    """``uri`` without a password, fit for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_tracking_reachable(tracking_uri: str, timeout: float = REACH_TIMEOUT) -> None:
    """Fail fast when a tracking store cannot be used.

    HTTP(S) servers must answer ``GET /health`` within ``timeout`` seconds; SQLite
    files and file stores must be creatable or writable; other databases must accept
    a connection. Other schemes (``databricks``) are left to MLflow.

    Raises:
        TrackingError: One line naming the URI and what is wrong.
    """
    scheme = urlsplit(tracking_uri).scheme
    match scheme:
        case "http" | "https":
            _check_server(tracking_uri, timeout)
        case "sqlite":
            _check_sqlite(tracking_uri)
        case "" | "file":
            _check_folder(tracking_uri, Path(unquote(urlsplit(tracking_uri).path)))
        case _ if scheme.partition("+")[0] in DATABASE_SCHEMES:
            _check_database(tracking_uri, timeout)
        case _:
            pass


def _check_server(uri: str, timeout: float) -> None:
    """``GET /health`` through MLflow's own HTTP client, once, within ``timeout`` seconds.

    So the check uses what MLflow's calls will use: credentials in the URI
    (``http://user:password@host``) or in ``MLFLOW_TRACKING_USERNAME`` and
    ``..._PASSWORD`` or ``..._TOKEN``, its TLS settings and proxies.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(
            get_default_host_creds(uri),
            "/health",
            "GET",
            max_retries=0,
            timeout=timeout,
            raise_on_status=False,
        )
    except MlflowException as exc:  # its message holds the URI, password and all
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {redact(uri)} "
            f"({connection_reason(exc.message, uri)}); start it or fix --tracking-uri / "
            "MLFLOW_TRACKING_URI"
        ) from None
    if response.status_code not in (200, 401, 403):  # behind authentication: there all the same
        raise TrackingError(
            f"{redact(uri)} answered HTTP {response.status_code} to /health: not an MLflow "
            "tracking server? Fix --tracking-uri / MLFLOW_TRACKING_URI"
        )


def connection_reason(message: str, uri: str) -> str:
    """Why a request to ``uri`` failed, in a few words, from an HTTP client's message.

    ``Connection refused``, ``Read timed out``, ``Name or service not known``, ...;
    else the message itself, shortened, without the password.
    """
    for pattern in (r"\[Errno -?\d+\] ([^'\")\]]+)", r"(Read timed out|Connect timeout|timed out)"):
        found = re.search(pattern, message)
        if found:
            return found.group(1).strip()
    text = redact_text(message, uri)
    return text if len(text) <= 160 else text[:157] + "..."


def redact_text(text: str, uri: str) -> str:
    """``text`` with ``uri``'s password masked wherever it appears."""
    password = urlsplit(uri).password
    return text if not password else text.replace(password, "***")


def _check_sqlite(uri: str) -> None:
    path_text = unquote(uri.removeprefix("sqlite:///"))
    if path_text in ("", ":memory:"):
        return
    path = Path(path_text)
    if path.exists():
        with path.open("rb") as file:
            head = file.read(16)
        if head and head != b"SQLite format 3\x00":
            raise TrackingError(f"tracking store {uri}: {path} is not an SQLite database")
        if not os.access(path, os.R_OK | os.W_OK):
            raise TrackingError(f"tracking store {uri}: {path} is not readable and writable")
    elif not path.parent.is_dir():
        raise TrackingError(
            f"tracking store {uri}: folder {path.parent} does not exist (create it first)"
        )
    elif not os.access(path.parent, os.W_OK):
        raise TrackingError(f"tracking store {uri}: cannot create a database in {path.parent}")


def _check_folder(uri: str, path: Path) -> None:
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        raise TrackingError(f"tracking store {uri}: {existing or path} is not a writable folder")


def _check_database(uri: str, timeout: float) -> None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout)})
        with engine.connect():
            pass
    except ImportError as exc:
        raise TrackingError(
            f"tracking store {redact(uri)}: database driver missing ({exc})"
        ) from exc
    except Exception as exc:  # any driver error means: cannot use it
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"cannot connect to the tracking database {redact(uri)} ({first_line})"
        ) from exc


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Make ``uri`` MLflow's global tracking URI for the block, then restore the previous one.

    MLflow's fluent API (``start_run``, ``log_model``) and some artifact downloads
    read only the global URI.
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it


def client(tracking_uri: str | None = None, check: bool = True) -> MlflowClient:
    """An ``MlflowClient`` for the store (also its model registry), checked first."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    if check:
        check_tracking_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve_version(mlflow_client: MlflowClient, ref: ModelRef) -> ModelVersion:
    """The model version ``ref`` names (the latest version when it names none).

    Raises:
        ModelNotFoundError: No such model, alias or version; the message lists what exists.
    """
    from mlflow.exceptions import MlflowException

    uri = redact(mlflow_client.tracking_uri)
    try:
        model = mlflow_client.get_registered_model(ref.name)
    except MlflowException as exc:
        known = [m.name for m in mlflow_client.search_registered_models(max_results=50)]
        raise ModelNotFoundError(
            f"no registered model {ref.name!r} in {uri} (models: {', '.join(known) or 'none'})"
        ) from exc
    try:
        if ref.alias:
            return mlflow_client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version:
            return mlflow_client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        listing = _version_listing(mlflow_client, model)
        raise ModelNotFoundError(
            f"model {ref.name!r} has no {what} in {uri} (versions: {listing})"
        ) from exc
    versions = _versions(mlflow_client, ref.name)
    if not versions:
        raise ModelNotFoundError(f"model {ref.name!r} has no versions in {uri}")
    return versions[-1]


def _version_listing(mlflow_client: MlflowClient, model: RegisteredModel) -> str:
    """``1, 2 (candidate), 3 (production)``: the versions of a model with their aliases."""
    aliases: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    listing = []
    for version in _versions(mlflow_client, model.name):
        names = sorted(aliases.get(str(version.version), []))
        listing.append(f"{version.version}" + (f" ({', '.join(names)})" if names else ""))
    return ", ".join(listing) or "none"


def _versions(mlflow_client: MlflowClient, name: str) -> list[ModelVersion]:
    found = mlflow_client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def load_model(
    uri: str | Path, tracking_uri: str | None = None, cache: Path | None = None
) -> ModelArtifact:
    """Load the terraseg model artifact behind any accepted model URI.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``
            or a local folder (see the module docstring).
        tracking_uri: The tracking store for ``models:/`` and ``runs:/`` URIs.
        cache: Keep a downloaded model here (see :func:`fetch_model`); by default
            it is downloaded to a temporary folder and removed after loading.

    Returns:
        The artifact, weights loaded on the CPU; for a model URI its metadata
        holds ``resolved_uri``, the exact version (``models:/NAME/3`` for
        ``models:/NAME@production``).

    Raises:
        ModelNotFoundError: The model, alias, version, run or local folder does not exist.
        TrackingError: The tracking store cannot be reached.
        InputError: The URI names something that is not a terraseg model.
    """
    text = str(uri)
    if not text.startswith(("models:/", "runs:/")):
        return load_artifact(_local_artifact_folder(Path(text)))
    with tempfile.TemporaryDirectory(prefix="terraseg-model-") as tmp:
        folder, source = fetch_model(text, tracking_uri, cache or Path(tmp))
        artifact = load_artifact(_artifact_folder_in(folder, text))
    artifact.metadata["resolved_uri"] = source
    return artifact


def fetch_model(uri: str, tracking_uri: str | None, cache: Path) -> tuple[Path, str]:
    """The local folder of the MLflow model behind a ``models:/`` or ``runs:/`` URI.

    A model whose files are on this machine's disk (a local or SQLite store) is
    used where it is: nothing is copied. A relative artifact location (a movable
    store, see :func:`artifact_path`) is found next to the SQLite file. Any other
    model is downloaded once into ``cache/KEY``, KEY naming the exact version and
    where its files are, through a temporary name; a later call finds it there.

    Args:
        uri: The model URI.
        tracking_uri: The tracking store.
        cache: Folder of downloaded models.

    Returns:
        The folder (holding ``MLmodel``) and the exact URI (an alias resolved).

    Raises:
        ModelNotFoundError: The model, alias, version or run does not exist, or
            its files are missing.
        TrackingError: The tracking store cannot be reached.
    """
    mlflow_client = client(tracking_uri)
    source, storage = model_location(mlflow_client, uri)
    local = artifact_path(storage, mlflow_client.tracking_uri)
    if local is not None:
        if not (local / "MLmodel").is_file():
            raise ModelNotFoundError(f"{uri}: the model's files are not at {local}")
        return local, source
    key = hashlib.sha256(f"{source} {storage}".encode()).hexdigest()[:12]
    folder = Path(cache) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', source)}-{key}"
    if not (folder / "MLmodel").is_file():
        _download(mlflow_client, storage, folder, uri)
    return folder, source


def _download(mlflow_client: MlflowClient, storage: str, folder: Path, uri: str) -> None:
    """Download the model folder at ``storage`` to ``folder``, renamed into place when whole."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder.parent) as tmp:
        try:
            with use_tracking_uri(mlflow_client.tracking_uri):
                local = mlflow.artifacts.download_artifacts(artifact_uri=storage, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise ModelNotFoundError(f"cannot download {uri}: {_first_line(exc)}") from exc
        try:
            os.replace(local, folder)
        except OSError:  # another process put it there first
            if not (folder / "MLmodel").is_file():
                raise


def model_location(mlflow_client: MlflowClient, uri: str) -> tuple[str, str]:
    """The exact URI of a ``models:/`` or ``runs:/`` URI, and where the model's files are.

    Returns:
        ``models:/NAME/VERSION`` (or the ``runs:/`` URI itself) and the artifact
        URI of the model folder, as the store records it.

    Raises:
        ModelNotFoundError: The model, alias, version or run does not exist.
        InputError: A ``runs:/`` URI without the model's name in the run.
    """
    from mlflow.exceptions import MlflowException

    if uri.startswith("models:/"):
        version = resolve_version(mlflow_client, ModelRef.parse(uri))
        storage = mlflow_client.get_model_version_download_uri(version.name, version.version)
        return f"models:/{version.name}/{version.version}", str(storage)
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"no run {run_id!r} in {redact(mlflow_client.tracking_uri)}"
        ) from exc
    if not path.strip("/"):
        raise InputError(f"{uri}: name the model inside the run, e.g. runs:/{run_id}/model")
    name, _, rest = path.strip("/").partition("/")
    found = mlflow_client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'"
    )
    logged = next((m for m in found if m.source_run_id == run_id), None)
    if logged is not None:  # MLflow 3 keeps a logged model's files apart from the run's
        return uri, "/".join(part for part in (logged.artifact_location, rest) if part)
    return uri, f"{run.info.artifact_uri}/{path.strip('/')}"


def artifact_path(storage: str, tracking_uri: str) -> Path | None:
    """The local path of an artifact URI, or ``None`` when it is not on this machine's disk.

    A relative path (the artifact location of an experiment created movable, see
    :func:`terraseg.workflows.mlflow_tracking.movable_experiment`) is relative to the folder
    of the SQLite store file, wherever that folder has been moved; with any
    other store, to the working directory, as MLflow reads it.
    """
    scheme = urlsplit(storage).scheme
    if scheme == "file":
        path = Path(unquote(urlsplit(storage).path))
    elif scheme == "":
        path = Path(storage)
    else:
        return None
    if path.is_absolute():
        return path
    store = sqlite_path(tracking_uri)
    return (store.parent if store else Path.cwd()) / path


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of an SQLite tracking URI; ``None`` for any other store."""
    if not tracking_uri.startswith("sqlite:///") or tracking_uri.endswith(":memory:"):
        return None
    return Path(unquote(tracking_uri.removeprefix("sqlite:///")))


def _local_artifact_folder(path: Path) -> Path:
    if not path.exists():
        raise ModelNotFoundError(
            "no such model folder (or use models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/model)",
            path=path,
        )
    if (path / MANIFEST).is_file():
        return path
    return _artifact_folder_in(path, str(path))


def _artifact_folder_in(model_dir: Path, uri: str) -> Path:
    """The terraseg artifact folder inside a (downloaded) MLflow model folder."""
    mlmodel = _read_mlmodel(model_dir, uri)
    pyfunc = mlmodel.get("flavors", {}).get("python_function", {})
    entry = pyfunc.get("artifacts", {}).get(PYFUNC_ARTIFACT_KEY)
    if not entry:
        raise InputError(f"{uri} is an MLflow model, but not a terraseg model")
    return model_dir / str(entry["path"])


def _read_mlmodel(model_dir: Path, uri: str) -> dict[str, Any]:
    import yaml

    path = model_dir / "MLmodel"
    if not path.is_file():
        raise InputError(f"{uri} is neither a terraseg model artifact nor an MLflow model")
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_model(uri: str | Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """What ``terraseg registry show`` prints: registry entry, source run, bands, classes.

    Args:
        uri: Any accepted model URI; ``NAME``, ``NAME@ALIAS`` and ``NAME/VERSION``
            without ``models:/`` also name registered models (``NAME``: latest version).
        tracking_uri: The tracking store.

    Returns:
        JSON-ready data: ``uri``, the manifest (``bands``, ``classes``, ``tile_size``,
        ``input_dtype``, ``normalization``, ``model_config``), and for MLflow URIs the
        source ``run`` (id, name, experiment, ``metrics``: a training run's headline
        is its best epoch's, named by ``best_epoch``; the last epoch's are
        ``last/*``) and for registered
        versions ``name``, ``version``, ``aliases``, ``created``, ``description`` and
        ``tags``.

    Raises:
        ModelNotFoundError: The model does not exist.
        TrackingError: The tracking store cannot be reached.
    """
    text = str(uri)
    if not text.startswith(("models:/", "runs:/")):
        if Path(text).exists():
            manifest = load_artifact(_local_artifact_folder(Path(text))).manifest()
            return {"uri": text, **_manifest_summary(manifest)}
        text = "models:/" + text
    mlflow_client = client(tracking_uri)
    info: dict[str, Any] = {"uri": text}
    if text.startswith("models:/"):
        version = resolve_version(mlflow_client, ModelRef.parse(text))
        info |= _version_summary(version)
        run_id = version.run_id
    else:
        run_id = text.removeprefix("runs:/").partition("/")[0]
    source, storage = model_location(mlflow_client, text)
    info |= _manifest_summary(_remote_manifest(mlflow_client, source, storage))
    if run_id:
        info["run"] = _run_summary(mlflow_client, run_id)
    return info


def _remote_manifest(mlflow_client: MlflowClient, source: str, storage: str) -> dict[str, Any]:
    """The artifact manifest stored in the MLmodel file of a logged model (not the weights)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="terraseg-mlmodel-") as tmp:
        folder = artifact_path(storage, mlflow_client.tracking_uri)
        if folder is None:
            try:
                with use_tracking_uri(mlflow_client.tracking_uri):
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{storage}/MLmodel", dst_path=tmp
                    )
            except (MlflowException, OSError) as exc:
                raise ModelNotFoundError(
                    f"no MLflow model at {source}: {_first_line(exc)}"
                ) from exc
            folder = next(Path(tmp).rglob("MLmodel")).parent
        elif not (folder / "MLmodel").is_file():
            raise ModelNotFoundError(f"{source}: the model's files are not at {folder}")
        mlmodel = _read_mlmodel(folder, source)
    manifest = (mlmodel.get("metadata") or {}).get(MLMODEL_METADATA_KEY)
    if not manifest:
        raise InputError(f"{source} is an MLflow model, but not a terraseg model")
    return dict(manifest)


def _manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "bands": manifest["band_names"],
        "classes": manifest["classes"],
        "tile_size": manifest["tile_size"],
        "input_dtype": manifest.get("input_dtype", "uint8"),
        "normalization": manifest["normalization"],
        "model_config": manifest["model_config"],
    }


def _version_summary(version: ModelVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": int(version.version),
        "aliases": list(version.aliases),
        "created": _iso_time(version.creation_timestamp),
        "description": version.description or "",
        "tags": dict(sorted(version.tags.items())),
    }


def _run_summary(mlflow_client: MlflowClient, run_id: str) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(run_id)
        experiment = mlflow_client.get_experiment(run.info.experiment_id)
    except MlflowException:
        return {"id": run_id}
    metrics = dict(sorted(run.data.metrics.items()))
    summary: dict[str, Any] = {
        "id": run_id,
        "name": run.info.run_name,
        "experiment": experiment.name,
        "status": run.info.status,
    }
    if "best_epoch" in metrics:  # terraseg train: the metrics are the best epoch's
        summary["best_epoch"] = int(metrics["best_epoch"])
    return summary | {"metrics": metrics}


@dataclass(frozen=True)
class VersionCard:
    """What a registered model version says about its model: a description and tags."""

    description: str
    tags: dict[str, str]


HELD_BACK_LINE = "- Held-back"  # starts the description line of a held-back evaluation


def version_card(manifest: dict[str, Any]) -> VersionCard:
    """The description and tags of a model version, from its artifact's manifest.

    Tags: ``classes`` (``0 background, 1 building, ...``), ``bands``,
    ``input_dtype``, ``tile_size``, and what training recorded: ``resolution``,
    ``val_mean_iou`` and ``best_epoch`` (the best epoch's, the registered weights),
    ``training_store`` and ``training_store_digest``. The description says the same
    in sentences (MLflow shows it as Markdown on the version's page).

    Args:
        manifest: :meth:`terraseg.pipeline.artifact.ModelArtifact.manifest`.
    """
    meta = manifest.get("metadata") or {}
    classes = ", ".join(f"{c['id']} {c['name']}" for c in manifest["classes"])
    config = manifest["model_config"]
    tags = {
        "classes": classes,
        "bands": ", ".join(manifest["band_names"]),
        "input_dtype": str(manifest.get("input_dtype", "uint8")),
        "tile_size": str(manifest["tile_size"]),
    }
    miou = (meta.get("metrics") or {}).get("val/mean_iou")
    optional = {
        "resolution": meta.get("resolution"),
        "val_mean_iou": None if miou is None else f"{miou:.4f}",
        "best_epoch": meta.get("epoch"),
        "training_store": meta.get("store"),
        "training_store_digest": meta.get("store_digest"),
    }
    tags |= {key: str(value) for key, value in optional.items() if value is not None}
    ground = f" at {tags['resolution']} per pixel" if "resolution" in tags else ""
    lines = [
        f"DeepLabV3+ ({config.get('backbone')}, output stride {config.get('output_stride')}) "
        f"segmenting {len(manifest['classes'])} classes from {len(manifest['band_names'])} "
        f"{tags['input_dtype']} bands{ground}, in tiles of {tags['tile_size']} pixels.",
        "",
        f"- Classes: {tags['classes']}",
        f"- Bands, in order: {tags['bands']}",
    ]
    if "val_mean_iou" in tags:
        lines.append(
            f"- Validation mean IoU {tags['val_mean_iou']} (epoch {tags.get('best_epoch', '?')}, "
            "the best; these weights)"
        )
    if "training_store" in tags:
        digest = tags.get("training_store_digest")
        lines.append(f"- Trained on {tags['training_store']}" + (f" ({digest})" if digest else ""))
    return VersionCard("\n".join(lines), tags)


def held_back_card(report: dict[str, Any], source: str) -> VersionCard:
    """Tags and a description line for an evaluation on held-back scenes (``terraseg evaluate``).

    Args:
        report: The evaluation's ``metrics.json``: ``mean_iou`` and ``pixel_accuracy``.
        source: Where the report came from, named in the description.

    Raises:
        InputError: The report has no ``mean_iou``.
    """
    if not isinstance(report.get("mean_iou"), int | float):
        raise InputError(f"{source}: no mean_iou (is it the output of terraseg evaluate?)")
    tags = {"heldout_mean_iou": f"{report['mean_iou']:.4f}", "heldout_evaluation": source}
    line = f"mean IoU {tags['heldout_mean_iou']}"
    if isinstance(report.get("pixel_accuracy"), int | float):
        tags["heldout_pixel_accuracy"] = f"{report['pixel_accuracy']:.4f}"
        line += f", pixel accuracy {tags['heldout_pixel_accuracy']}"
    return VersionCard(f"{HELD_BACK_LINE} {line} ({source})", tags)


def tag_version(
    ref: str,
    tags: dict[str, str],
    tracking_uri: str | None = None,
    *,
    line: str | None = None,
    replaces: str | None = None,
) -> ModelVersion:
    """Set tags of a registered model version; add a line to its description.

    Args:
        ref: ``[models:/]NAME[@ALIAS|/VERSION]`` (``NAME``: the latest version).
        tags: Tags to set.
        tracking_uri: The tracking store.
        line: A line to add at the end of the description.
        replaces: Description lines that start with this text are removed first
            (a line of the same kind set before).

    Returns:
        The version, as it was before.

    Raises:
        ModelNotFoundError: No such model, alias or version.
        TrackingError: The tracking store cannot be reached.
    """
    mlflow_client = client(tracking_uri)
    version = resolve_version(mlflow_client, ModelRef.parse(ref))
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(version.name, version.version, key, value)
    if line is not None:
        kept = (version.description or "").splitlines()
        if replaces:
            kept = [text for text in kept if not text.startswith(replaces)]
        description = "\n".join([*kept, line]).strip("\n")
        mlflow_client.update_model_version(version.name, version.version, description=description)
    return version


def record_held_back(
    ref: str, metrics: Path, tracking_uri: str | None = None
) -> tuple[ModelVersion, VersionCard]:
    """Tag a model version with its scores on held-back scenes (``terraseg evaluate``'s JSON).

    Sets ``heldout_mean_iou``, ``heldout_pixel_accuracy`` and ``heldout_evaluation``
    (the file) and puts a line with them in the description, replacing an earlier one.

    Raises:
        InputError: ``metrics`` is not readable JSON with a ``mean_iou``.
        ModelNotFoundError: No such model, alias or version.
        TrackingError: The tracking store cannot be reached.
    """
    import json

    try:
        report = json.loads(Path(metrics).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the evaluation ({exc})", path=metrics) from exc
    card = held_back_card(report if isinstance(report, dict) else {}, str(metrics))
    version = tag_version(
        ref, card.tags, tracking_uri, line=card.description, replaces=HELD_BACK_LINE
    )
    return version, card


def list_models(tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Registered models: name, latest version, aliases and last update, by name.

    Raises:
        TrackingError: The tracking store cannot be reached.
    """
    mlflow_client = client(tracking_uri)
    models: list[RegisteredModel] = []
    token = None
    while True:
        page = mlflow_client.search_registered_models(max_results=100, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    return [
        {
            "name": model.name,
            "latest_version": max((int(v.version) for v in model.latest_versions), default=None),
            "aliases": {alias: int(version) for alias, version in model.aliases.items()},
            "updated": _iso_time(model.last_updated_timestamp),
            "description": model.description or "",
        }
        for model in sorted(models, key=lambda m: m.name)
    ]


def promote(name: str, version: int, alias: str, tracking_uri: str | None = None) -> int | None:
    """Point ``alias`` of model ``name`` at ``version``.

    Returns:
        The version the alias pointed at before, or ``None``.

    Raises:
        ModelNotFoundError: No such model or version.
        TrackingError: The tracking store cannot be reached.
    """
    mlflow_client = client(tracking_uri)
    resolve_version(mlflow_client, ModelRef(name, version=str(version)))
    previous = mlflow_client.get_registered_model(name).aliases.get(alias)
    mlflow_client.set_registered_model_alias(name, alias, str(version))
    return None if previous is None else int(previous)


def _iso_time(milliseconds: int | None) -> str | None:
    from datetime import UTC, datetime

    if milliseconds is None:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")
