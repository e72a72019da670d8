import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from terraseg.pipeline.chunk_writer import ChunkLayout, remove_partial_files, write_region


def _array(path, shape, chunks, dtype, fill, compressors=None):
    return zarr.create_array(
        str(path),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill,
        compressors=compressors if compressors is not None else ZstdCodec(level=1),
    )


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "bool"])
def test_regions_read_back_through_zarr_including_edge_chunks(tmp_path, dtype):
    _array(tmp_path / "a.zarr", (2, 70, 45), (2, 32, 32), dtype, 0)
    rng = np.random.default_rng(0)
    data = (rng.random((2, 70, 45)) * 1000).astype(dtype)
    # two regions: an interior 2x1 block of chunks and the ragged bottom-right corner
    write_region(tmp_path / "a.zarr", "", (0, 0, 0), data[:, :64, :32])
    write_region(tmp_path / "a.zarr", "", (0, 64, 32), data[:, 64:, 32:])
    stored = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[...]
    np.testing.assert_array_equal(stored[:, :64, :32], data[:, :64, :32])
    np.testing.assert_array_equal(stored[:, 64:, 32:], data[:, 64:, 32:])
    assert not stored[:, :64, 32:].any()  # untouched chunks read as the fill value


def test_chunk_files_are_what_zarr_itself_writes(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    ours = _array(tmp_path / "ours.zarr", (64, 64), (32, 32), "uint8", 255)
    theirs = _array(tmp_path / "theirs.zarr", (64, 64), (32, 32), "uint8", 255)
    write_region(tmp_path / "ours.zarr", "", (0, 0), data)
    theirs[...] = data
    for key in ("c/0/0", "c/1/1"):
        assert (tmp_path / "ours.zarr" / key).read_bytes() == (
            tmp_path / "theirs.zarr" / key
        ).read_bytes()
    np.testing.assert_array_equal(ours[...], data)


def test_other_codecs_fall_back_to_zarr(tmp_path):
    _array(tmp_path / "b.zarr", (40, 40), (20, 20), "uint8", 0, compressors=BloscCodec())
    assert ChunkLayout.read(tmp_path / "b.zarr") is None
    data = np.arange(1600, dtype=np.uint8).reshape(40, 40)
    write_region(tmp_path / "b.zarr", "", (20, 0), data[20:])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "b.zarr"))[20:], data[20:])


def test_unaligned_region_is_refused(tmp_path):
    _array(tmp_path / "c.zarr", (40, 40), (20, 20), "uint8", 0)
    with pytest.raises(ValueError, match="not aligned"):
        write_region(tmp_path / "c.zarr", "", (10, 0), np.zeros((20, 20), np.uint8))


def test_regions_past_the_edge_are_refused(tmp_path):
    _array(tmp_path / "d.zarr", (40, 40), (20, 20), "uint8", 0)
    with pytest.raises(ValueError, match="past 40"):
        write_region(tmp_path / "d.zarr", "", (20, 0), np.zeros((40, 20), np.uint8))


def test_a_removed_store_is_not_recreated_by_a_late_write(tmp_path):
    import shutil

    _array(tmp_path / "e.zarr", (40, 40), (20, 20), "uint8", 0)
    layout = ChunkLayout.read(tmp_path / "e.zarr")
    assert layout is not None
    shutil.rmtree(tmp_path / "e.zarr")
    with pytest.raises(FileNotFoundError):
        layout.write((0, 0), np.ones((20, 20), np.uint8))
    assert not (tmp_path / "e.zarr").exists()


def test_partial_files_of_killed_writes_are_removed_and_chunks_kept(tmp_path):
    _array(tmp_path / "a.zarr", (64, 64), (32, 32), "uint8", 0)
    data = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    write_region(tmp_path / "a.zarr", "", (0, 0), data)
    chunk = tmp_path / "a.zarr" / "c" / "1" / "1"
    partial = chunk.with_name(f".{chunk.name}.123-456.tmp")
    partial.write_bytes(b"half a chunk")
    assert remove_partial_files(tmp_path / "a.zarr") == 1
    assert not partial.exists() and chunk.exists()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[...], data)
