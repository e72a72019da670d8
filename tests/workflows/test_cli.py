import rasterio
from click.testing import CliRunner

from pipeline import __version__
from workflows.cli.main import cli


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
    result = run("synth", tmp_path / "out", "--nodata", "sometimes")
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
