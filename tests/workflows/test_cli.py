import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import warnings
from pathlib import Path

import numpy as np
import rasterio
from click.testing import CliRunner
from rasterio.errors import NotGeoreferencedWarning

from terraseg.pipeline import __version__
from terraseg.workflows.cli.main import cli
from terraseg.workflows.progress import bars_enabled

TERRASEG = str(Path(sys.executable).parent / "terraseg")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version_and_help():
    assert run("--version").output.strip() == f"terraseg, version {__version__}"
    result = run("--help")
    assert result.exit_code == 0
    assert "synth" in result.output


def test_library_error_is_one_line_and_exit_1(tmp_path):
    result = run("-q", "synth", tmp_path / "out", "--crs", "EPSG:4326")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: crs: CRS 'EPSG:4326' is geographic; synthetic scenes need")
    assert not (tmp_path / "out").exists()


def test_usage_error_exit_2(tmp_path):
    result = run("synth", tmp_path / "out", "--nodata-areas", "sometimes")
    assert result.exit_code == 2
    assert "'sometimes' is not one of 'none', 'border', 'holes', 'both'" in result.output
    assert run("no-such-command").exit_code == 2


def test_config_file_errors_name_file_and_dotted_key(tmp_path):
    config = tmp_path / "synth.yaml"
    config.write_text("scenes: 1\nsize: 64\nresoluton: 2\n")
    result = run("synth", tmp_path / "out", "--config", config)
    assert result.exit_code == 1
    assert f"Error: {config}: resoluton: unknown key (allowed keys: " in result.output
    assert "resolution" in result.output


def test_cli_options_override_config_file(tmp_path):
    config = tmp_path / "synth.yaml"
    config.write_text("scenes: 2\nsize: 96\nresolution: 2.0\nseed: 7\nworkers: 1\n")
    result = run(
        "-q", "synth", tmp_path / "out", "--config", config, "--scenes", "1", "--size", "64x48"
    )
    assert result.exit_code == 0, result.output
    assert result.output.split() == [
        str(tmp_path / "out" / name) for name in ("scene_000.tif", "labels.gpkg", "classes.yaml")
    ]
    with rasterio.open(tmp_path / "out" / "scene_000.tif") as src:
        assert (src.width, src.height) == (64, 48)  # from the CLI
        assert src.res == (2.0, 2.0)  # from the file
        assert src.tags()["TERRASEG_SYNTH"] == "seed=7 scene=0"


# --------------------------------------------------------------------------- verbosity


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bars_only_on_a_terminal_and_not_with_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert bars_enabled(True, Stream(tty=True))
    assert not bars_enabled(True, Stream(tty=False))  # a file, a pipe, a CI log
    assert not bars_enabled(False, Stream(tty=True))  # -q
    for value, enabled in (("1", False), ("true", False), ("0", True), ("", True)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert bars_enabled(True, Stream(tty=True)) is enabled


def terraseg(*args, tty=False, **env):
    """Run the CLI in a process of its own; its stderr a pipe, or a terminal with ``tty``."""
    command = [TERRASEG, *map(str, args)]
    full_env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"} | env
    if not tty:
        result = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)
        return result.returncode, result.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, cols
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower, env=full_env) as p:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = p.wait(timeout=300)
    os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")


def test_progress_frames_only_when_stderr_is_a_terminal(tmp_path):
    synth = ["synth", "--scenes", "1", "--size", "64", "--workers", "1"]
    code, stderr = terraseg(*synth, tmp_path / "pipe")
    assert code == 0 and "\r" not in stderr and "painting" not in stderr
    code, stderr = terraseg(*synth, tmp_path / "tty", tty=True)
    assert code == 0 and "\r" in stderr and "painting" in stderr
    code, stderr = terraseg(*synth, tmp_path / "off", tty=True, TQDM_DISABLE="1")
    assert code == 0 and "\r" not in stderr


def test_quiet_after_the_command_and_no_georeferencing_warning(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for folder, count in ((images, 3), (masks, 1)):
        folder.mkdir()
        profile = {"driver": "PNG", "width": 40, "height": 40, "count": count, "dtype": "uint8"}
        with warnings.catch_warnings():  # PNG tiles have no georeferencing, on purpose
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(folder / "tile.png", "w", **profile) as dst:
                dst.write(np.ones((count, 40, 40), np.uint8))
    (masks / "classes.yaml").write_text("classes:\n- {id: 0, name: a}\n- {id: 1, name: b}\n")
    tile = ["tile", "--pairs", images, masks, "--workers", "1", "--val-fraction", "0"]  # one tile
    code, stderr = terraseg(*tile, "--out", tmp_path / "a.zarr")
    assert code == 0, stderr
    assert (
        "WARNING terraseg.pipeline.tiling.split: 1 scenes have no CRS" in stderr
    )  # terraseg's own
    assert "NotGeoreferencedWarning" not in stderr and "\r" not in stderr
    code, stderr = terraseg(*tile, "--out", tmp_path / "b.zarr", "-q")
    assert (code, stderr) == (0, "")


def test_every_command_takes_verbosity_after_its_name():
    for command in (["predict"], ["vectorize"], ["registry", "list"], ["tile"]):
        result = run(*command, "--help")
        assert result.exit_code == 0, result.output
        assert "-q, --quiet" in result.output and "-v, --verbose" in result.output
    result = run("synth", "/nonexistent/out", "--crs", "EPSG:4326", "-q", "-q")
    assert result.exit_code == 1 and result.output.startswith("Error: crs: ")
