"""Data on object storage and web servers: URIs, listing, identities, staging and upload.

Rasters and label files are read where GDAL reaches: ``/vsicurl/``, ``/vsis3/``,
and ``/vsigs/`` paths, and the URLs ``s3://``, ``gs://``, ``http(s)://``,
which are read through the matching GDAL path (``s3://bucket/key`` as
``/vsis3/bucket/key``). Such an input travels through the stages as a
:class:`RemotePath`: a path object whose text is the GDAL path, never looked up on
the local disk. Listing a remote folder, reading a remote ``.txt`` list, the
identity of a remote file (size and ETag) and uploads go through fsspec (``s3fs``
and ``gcsfs``: the ``cloud`` extra); ``http(s)`` needs only aiohttp.

Outputs on object storage (a store, a prediction folder, a GeoPackage, a run
folder) are written to a local staging folder (:func:`local_folder`,
:func:`staged_file`) and uploaded once complete: objects appear only after the local
file was renamed to its final name, each object by one PUT (or one multipart upload),
so nothing half-written appears under a final key. Credentials and endpoints come
from the usual environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``);
:func:`gdal_s3_environment` gives GDAL the endpoint named by ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import hashlib
import os
from email.utils import parsedate_to_datetime
from pathlib import Path, PosixPath
from typing import Any
from urllib.parse import urlsplit

from terraseg.pipeline.errors import InputError, TerrasegError

# GDAL virtual file systems and the fsspec protocol of each (None: read through HTTP).
VSI_PROTOCOLS: dict[str, str | None] = {
    "/vsis3/": "s3",
    "/vsigs/": "gs",
    "/vsicurl/": None,
}
# URL schemes and the GDAL prefix that reads them.
URL_PREFIXES = {
    "s3://": "/vsis3/",
    "gs://": "/vsigs/",
    "gcs://": "/vsigs/",
    "http://": "/vsicurl/http://",
    "https://": "/vsicurl/https://",
}
CLOUD_EXTRA = "install the cloud extra: pip install 'terraseg[cloud]'"
STAGING_ENV = "TERRASEG_STAGING"  # where remote outputs are staged (default: the user's cache)


class RemoteError(TerrasegError, OSError):
    """An object store or web server cannot be reached, listed or written."""


def _unmangled(text: str) -> str:
    """A URL that went through :class:`~pathlib.Path` (``s3:/b/k``) as it was (``s3://b/k``)."""
    for scheme in URL_PREFIXES:
        collapsed = scheme.removesuffix("/")
        if text.startswith(collapsed) and not text.startswith(scheme):
            return scheme + text.removeprefix(collapsed)
    return text


def is_remote(item: str | os.PathLike[str]) -> bool:
    """Whether ``item`` names data on object storage or a web server (not the local disk).

    A URL that went through :class:`~pathlib.Path`, which collapses ``//`` (``s3:/b/k``),
    counts as the URL it was.
    """
    if isinstance(item, RemotePath):
        return True
    text = _unmangled(str(item))
    return text.startswith(tuple(VSI_PROTOCOLS)) or text.startswith(tuple(URL_PREFIXES))


def gdal_path(uri: str) -> str:
    """The GDAL path of ``uri``: ``s3://b/k`` is ``/vsis3/b/k``.

    ``https://h/f`` is ``/vsicurl/https://h/f``; a ``/vsi...`` path stays as it is.
    """
    uri = _unmangled(uri)
    for scheme, prefix in URL_PREFIXES.items():
        if uri.startswith(scheme):
            return prefix + uri.removeprefix(scheme)
    return uri


def fsspec_url(uri: str | os.PathLike[str]) -> str:
    """The fsspec URL of a remote ``uri``: ``/vsis3/b/k`` is ``s3://b/k``."""
    text = _unmangled(str(uri))
    for prefix, protocol in VSI_PROTOCOLS.items():
        if text.startswith(prefix):
            rest = text.removeprefix(prefix)
            return rest if protocol is None else f"{protocol}://{rest}"
    return "gs://" + text.removeprefix("gcs://") if text.startswith("gcs://") else text


class RemotePath(PosixPath):
    """A raster or label file on object storage or a web server, as its GDAL path.

    It goes wherever the stages take a :class:`~pathlib.Path` (``name``, ``stem``,
    ``suffix`` and ``parent`` work), and its text is the GDAL path that rasterio and
    pyogrio open: ``/vsis3/bucket/key``, ``/vsicurl/https://host/file.tif``.
    It is never on this machine's disk: ``exists()`` is False, :meth:`resolve`
    returns it as it is. :func:`remote_identity` says what it is now.
    """

    def __new__(cls, uri: str | os.PathLike[str], *args: Any) -> RemotePath:  # noqa: D102
        use_aws_endpoint()  # here too: a path unpickled on a worker reads with GDAL next
        text = gdal_path(str(uri)) if isinstance(uri, str) else str(uri)
        return super().__new__(cls, text, *args)

    def __str__(self) -> str:
        text = super().__str__()
        for scheme in ("http:/", "https:/"):  # a path's parts lose the URL's second slash
            marker = f"/vsicurl/{scheme}"
            if text.startswith(marker) and not text.startswith(marker + "/"):
                return marker + "/" + text.removeprefix(marker)
        return text

    def __fspath__(self) -> str:
        return str(self)

    def resolve(self, strict: bool = False) -> RemotePath:
        """The path itself: it is absolute, and no local link can move it."""
        return self

    def absolute(self) -> RemotePath:
        """The path itself."""
        return self


def as_input(item: str | os.PathLike[str]) -> Path:
    """``item`` as a path for the stages: a :class:`RemotePath` when remote, else a Path."""
    if isinstance(item, RemotePath) or not is_remote(item):
        return item if isinstance(item, Path) else Path(item)
    return RemotePath(str(item))


def as_location(item: str | os.PathLike[str]) -> Path:
    """An input or output location: a :class:`RemotePath` when remote, else an absolute Path."""
    return as_input(item) if is_remote(item) else Path(item).resolve()


def local_folder(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or for a remote location its staging folder on this disk."""
    return staging_folder(str(path)) if is_remote(path) else Path(path)


def staged_file(path: str | os.PathLike[str]) -> Path:
    """Where a file output is written: ``path``, or a remote one's staging copy.

    The staging copy is a file of the same name in the staging folder, uploaded
    when complete.
    """
    if not is_remote(path):
        return Path(path)
    return local_folder(path) / Path(fsspec_url(path)).name


def use_aws_endpoint() -> None:
    """Give GDAL the S3 endpoint of ``AWS_ENDPOINT_URL`` (see :func:`gdal_s3_environment`).

    The settings go into this process's environment, where GDAL reads them and
    the worker processes started after it inherit them.
    """
    os.environ.update(gdal_s3_environment())


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec file system of a remote ``uri`` and the path in it.

    Raises:
        RemoteError: The protocol's package is missing (the message says how to install it).
    """
    import fsspec
    from fsspec.core import url_to_fs

    use_aws_endpoint()
    url = fsspec_url(uri)
    try:
        return url_to_fs(url)  # type: ignore[no-any-return]
    except ImportError:
        protocol = fsspec.utils.get_protocol(url)
        raise RemoteError(
            f"reading {protocol}:// needs its fsspec package; {CLOUD_EXTRA}", path=uri
        ) from None


def remote_identity(uri: str | os.PathLike[str]) -> dict[str, Any]:
    """What a remote file is now: ``size``, ``mtime_ns`` and ``version`` (ETag or date).

    Raises:
        RasterReadError: The object is missing or cannot be reached (names ``uri``).
    """
    from terraseg.pipeline.errors import RasterReadError

    fs, path = filesystem(str(uri))
    try:
        info = fs.info(path)
    except (OSError, ValueError) as exc:
        raise RasterReadError(f"cannot be read ({remote_reason(exc)})", path=uri) from None
    changed = info.get("LastModified") or info.get("Last-Modified") or info.get("mtime")
    version = info.get("ETag") or info.get("etag") or info.get("generation") or str(changed or "")
    return {
        "size": int(info.get("size") or 0),
        "mtime_ns": _nanoseconds(changed),
        "version": str(version).strip('"'),
    }


def _nanoseconds(changed: Any) -> int:
    """A modification time (datetime, HTTP date or epoch seconds) in nanoseconds; 0 if none."""
    if changed is None or changed == "":
        return 0
    if isinstance(changed, str):
        try:
            changed = parsedate_to_datetime(changed)
        except (TypeError, ValueError):
            return 0
    if hasattr(changed, "timestamp"):
        return int(changed.timestamp() * 1e9)
    return int(float(changed) * 1e9)


def remote_reason(exc: BaseException) -> str:
    """A one-line reason for a failed remote operation, without credentials."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return "no such object or bucket"
    return text[:200]


def expand_remote(item: str, suffixes: frozenset[str], what: str) -> list[Path]:
    """The remote files ``item`` names: a file, a folder (its rasters) or a glob pattern.

    A URI ending in a raster suffix is taken as given (a missing one fails when
    opened, naming it); a folder (``s3://bucket/prefix/``) is listed; a pattern
    (``*``, ``?``, ``[``) is matched; a ``.txt`` object lists URIs, one per line.

    Raises:
        InputError: A folder or pattern matches no file.
        RemoteError: The folder cannot be listed.
    """
    suffix = Path(urlsplit(fsspec_url(item)).path).suffix.lower()
    if suffix in suffixes and not any(c in item for c in "*?["):
        return [RemotePath(item)]
    fs, path = filesystem(item)
    try:
        if suffix == ".txt":
            return [as_input(line) for line in _lines(fs.cat_file(path).decode())]
        if any(c in item for c in "*?["):
            found = fs.glob(path)
        else:
            found = [e for e in fs.ls(path.rstrip("/"), detail=False)]
    except FileNotFoundError:
        raise InputError(f"no {what} files found", path=item) from None
    except OSError as exc:
        raise RemoteError(f"cannot be listed ({remote_reason(exc)})", path=item) from None
    url = fsspec_url(item)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    files: list[Path] = [
        RemotePath(f"{protocol}://{name}" if protocol not in ("http", "https") else name)
        for name in sorted(found)
        if Path(name).suffix.lower() in suffixes
    ]
    if not files:
        raise InputError(f"no {what} files found", path=item)
    return files


def _lines(text: str) -> list[str]:
    """Non-empty lines of a list file that are not comments."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def gdal_s3_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """GDAL's settings for the S3 endpoint named by ``AWS_ENDPOINT_URL``, where unset.

    boto (and so fsspec's s3fs) reads ``AWS_ENDPOINT_URL``; GDAL reads
    ``AWS_S3_ENDPOINT`` (host and port), ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING``.
    The settings returned are those GDAL lacks: the endpoint's host, ``AWS_HTTPS=NO``
    for an ``http://`` endpoint and path-style addressing (``AWS_VIRTUAL_HOSTING=FALSE``,
    which S3-compatible servers expect).

    Args:
        environ: The environment (default: this process's).
    """
    env = os.environ if environ is None else environ
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not endpoint or env.get("AWS_S3_ENDPOINT"):
        return {}
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    found = {"AWS_S3_ENDPOINT": parts.netloc, "AWS_VIRTUAL_HOSTING": "FALSE"}
    if parts.scheme == "http":
        found["AWS_HTTPS"] = "NO"
    return {key: value for key, value in found.items() if key not in env}


def staging_folder(uri: str) -> Path:
    """The local folder where outputs bound for ``uri`` are written before upload.

    One folder per URI, under ``$TERRASEG_STAGING`` (default: ``~/.cache/terraseg/staging``):
    the local locks of a remote output live there, so two runs on this machine writing
    the same URI exclude each other (runs on other machines do not).
    """
    root = os.environ.get(STAGING_ENV) or Path.home() / ".cache" / "terraseg" / "staging"
    url = fsspec_url(uri).rstrip("/")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = Path(urlsplit(url).path).name or "root"
    return Path(root) / f"{key}-{name}"


def remote_exists(uri: str | os.PathLike[str]) -> bool:
    """Whether the object (or folder) ``uri`` exists.

    Raises:
        RemoteError: The store cannot be reached (no such bucket, no access).
    """
    fs, path = filesystem(str(uri))
    try:
        fs.invalidate_cache(path)
        return bool(fs.exists(path))
    except OSError as exc:
        raise RemoteError(f"cannot be reached ({remote_reason(exc)})", path=uri) from None


def upload_file(local: Path, uri: str | os.PathLike[str]) -> None:
    """Upload one finished local file to ``uri`` (one PUT, or one multipart upload).

    S3 and Google Cloud Storage show an object only once its upload is complete,
    so a reader never sees part of it.

    Raises:
        RemoteError: The upload failed (names ``uri``).
    """
    fs, path = filesystem(str(uri))
    try:
        fs.put_file(str(local), path)
    except OSError as exc:
        raise RemoteError(f"cannot be written ({remote_reason(exc)})", path=uri) from None


def download_folder(uri: str | os.PathLike[str], local: Path) -> bool:
    """Copy the remote folder ``uri`` to ``local`` (replaced); False when ``uri`` has none.

    Raises:
        RemoteError: The folder cannot be read (no such bucket, no access).
    """
    from terraseg.pipeline.files import remove_path

    remove_path(local)
    if not remote_exists(uri):
        return False
    fs, path = filesystem(str(uri))
    try:
        names = [name for name in fs.find(path) if name != path]
        targets = [str(local / Path(name).relative_to(path)) for name in names]
        for target in targets:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        fs.get(names, targets)
    except OSError as exc:
        raise RemoteError(f"cannot be read ({remote_reason(exc)})", path=uri) from None
    return True


def upload_folder(local: Path, uri: str | os.PathLike[str], *, marker: str) -> int:
    """Make the remote folder ``uri`` hold exactly the files of ``local``; return their count.

    ``marker`` (a file at the folder's top, such as a Zarr store's ``zarr.json``)
    says the folder is there: its object is deleted first and uploaded last, so
    while the other files are replaced (and objects ``local`` lacks are deleted)
    a reader finds no folder rather than a mix of two versions.

    Raises:
        RemoteError: An upload or deletion failed; the folder then lacks its marker.
    """
    fs, path = filesystem(str(uri))
    path = path.rstrip("/")
    files = sorted(p for p in local.rglob("*") if p.is_file())
    keys = {f"{path}/{p.relative_to(local).as_posix()}": p for p in files}
    top = f"{path}/{marker}"
    try:
        if fs.exists(top):
            fs.rm_file(top)
        rest = {key: file for key, file in keys.items() if key != top}
        fs.put([str(file) for file in rest.values()], list(rest))
        fs.invalidate_cache(path)
        stale = [key for key in fs.find(path) if key not in keys]
        if stale:
            fs.rm(stale)
        if top in keys:
            fs.put_file(str(keys[top]), top)
        fs.invalidate_cache(path)
    except OSError as exc:
        raise RemoteError(f"cannot be written ({remote_reason(exc)})", path=uri) from None
    return len(keys)


def stage_run_folder(target: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> Path:
    """The local folder a run bound for ``target`` writes (``target`` itself when local).

    For a remote ``target`` the staging folder is emptied; with ``resume`` the run
    is first downloaded from ``target``. Under torchrun only rank 0 does this (the
    other ranks write nothing before the group has formed).

    Raises:
        OutputExistsError: ``target`` holds a run, and neither ``resume`` nor
            ``overwrite`` was asked for.
        RemoteError: ``target`` cannot be reached.
    """
    from terraseg.pipeline.errors import OutputExistsError
    from terraseg.pipeline.files import remove_path

    if not is_remote(target):
        return Path(target)
    local = local_folder(target)
    if os.environ.get("RANK", "0") != "0":
        return local
    if not (resume or overwrite) and remote_exists(target):
        raise OutputExistsError(
            "holds a run; pass --overwrite to replace it or --resume to continue it", path=target
        )
    remove_path(local)
    if resume:
        download_folder(target, local)
    return local


def publish_run_folder(local: Path, target: str | os.PathLike[str]) -> None:
    """Upload a finished run from its staging folder to ``target`` (rank 0 only).

    ``summary.json``, written when the run ends, is uploaded last (see
    :func:`upload_folder`); the staging copy is removed afterwards.

    Raises:
        RemoteError: An upload failed.
    """
    from terraseg.pipeline.files import remove_path

    if not is_remote(target) or os.environ.get("RANK", "0") != "0":
        return
    upload_folder(local, target, marker="summary.json")
    remove_path(local)


def local_only(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a local Path; a remote one is refused (outputs not uploaded to buckets).

    Raises:
        ConfigError: ``path`` is on object storage or a web server.
    """
    from terraseg.pipeline.errors import ConfigError

    if is_remote(path):
        raise ConfigError(
            f"{what} is written to this disk only; give a local path", path=fsspec_url(path)
        )
    return Path(path)
