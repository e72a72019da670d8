"""Whether terraseg draws progress bars: one decision for every command and the libraries.

A bar is drawn only when it can be read: not with ``-q``, not when ``TQDM_DISABLE``
is set, and only when stderr is a terminal. Redirected to a file or a pipe (CI
logs, ``2> log.txt``, a scheduler's job log) a bar would write a line of carriage
returns per update. MLflow draws its own bars when it downloads or uploads
artifacts; it is told the same.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

FALSE_WORDS = {"", "0", "false", "no", "off"}
MLFLOW_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # read by MLflow at each transfer


def bars_enabled(requested: bool = True, stream: TextIO | None = None) -> bool:
    """True when progress bars should be drawn on ``stream`` (default: stderr).

    Args:
        requested: False when the user asked for quiet output (``-q``).
        stream: Where the bars would go.
    """
    if not requested or os.environ.get("TQDM_DISABLE", "").strip().lower() not in FALSE_WORDS:
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def configure_library_bars(enabled: bool) -> None:
    """Let the libraries terraseg drives (MLflow) draw bars only when terraseg does.

    Set in the environment, so that worker and training processes started
    afterwards inherit it.
    """
    os.environ[MLFLOW_BARS] = "true" if enabled else "false"
