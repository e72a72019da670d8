import pytest

from terraseg.pipeline.files import atomic_output, partial_path


def test_atomic_output_renames_on_success(tmp_path):
    final = tmp_path / "out.tif"
    with atomic_output(final) as tmp:
        assert tmp == partial_path(final)
        assert tmp.suffix == ".tif"  # drivers still recognise the format
        tmp.write_text("done")
    assert final.read_text() == "done"
    assert not partial_path(final).exists()


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "out.gpkg"
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_replaces_directory(tmp_path):
    final = tmp_path / "store.zarr"
    final.mkdir()
    (final / "old").write_text("x")
    with atomic_output(final) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [p.name for p in final.iterdir()] == ["new"]
