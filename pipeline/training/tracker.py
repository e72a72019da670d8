"""What the trainer reports to an experiment tracker, independent of MLflow.

The training session calls these methods on rank 0 only. ``workflows`` provides the
MLflow implementation; :class:`NullTracker` records nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Protocol

from terraseg.pipeline import __version__


class Tracker(Protocol):
    """An experiment tracker: parameters once, metrics per step, files, and the model."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Record flat ``{dotted.key: value}`` parameters."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record metric values at ``step`` (the epoch).

        A resumed run reports the epochs restored from its checkpoint again; a
        tracker that holds an epoch already may skip it.
        """

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Store a file (a plot, a config, an overlay image) with the run."""

    def log_dataset(self, path: str, digest: str, profile: dict[str, int]) -> None:
        """Record the training store the run reads: path, content digest, tile counts."""

    def log_model(self, artifact_dir: Path) -> str | None:
        """Store a model artifact folder with the run; return its URI if there is one."""


class NullTracker:
    """A tracker that records nothing."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Ignore parameters."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Ignore metrics."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Ignore files."""

    def log_dataset(self, path: str, digest: str, profile: dict[str, int]) -> None:
        """Ignore the store."""

    def log_model(self, artifact_dir: Path) -> str | None:
        """Ignore the model."""
        return None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` for logging nested configs as parameters."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def code_version() -> dict[str, str]:
    """Parameters naming the code: terraseg, torch and MLflow versions, and the git commit."""
    import mlflow
    import torch

    version = {
        "code.terraseg": __version__,
        "code.torch": str(torch.__version__),
        "code.mlflow": mlflow.__version__,
    }
    commit = _git(["rev-parse", "HEAD"])
    if commit:
        version["code.git_commit"] = commit
        version["code.git_dirty"] = str(bool(_git(["status", "--porcelain", "--untracked=no"])))
    return version


def _git(args: list[str]) -> str:
    """Output of a git command in the source folder; empty outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()
