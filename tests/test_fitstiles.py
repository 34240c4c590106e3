"""The tile-by-tile reader of compressed coadds against astropy's reader, on files CFITSIO compressed (fitsio)."""

from __future__ import annotations

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from realfake.inputs.fitstiles import TiledImage, TileError, _table_dtype


def _image(shape=(250, 173), seed=3):
    """Sky-like noise with what coadds hold: zeros (no data), NaN, a constant block (quantizing fails there: the
    tile is stored losslessly), large values."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.05, shape).astype(np.float32)
    a[10:20, 5:40] += 30.0  # a bright source
    a[60:170, 100:] = 0.0  # no data
    a[0:40, 120:160] = 0.25  # constant
    a[rng.integers(0, shape[0], 30), rng.integers(0, shape[1], 30)] = np.nan
    return a


def _write(path, data, tile, **compression):
    if compression.get("compress") is None:  # an uncompressed image in HDU 1
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data)]).writeto(path)
        return path
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(data, tile_dims=tile, **compression)
    return path


def _coadd(tmp_path, tile=(50, 50), image=False):
    """A file compressed by CFITSIO as legacypipe compresses a coadd: an image (dither 2) or an invvar (no dither)."""
    quantize = dict(qlevel=-1e-4, qmethod="SUBTRACTIVE_DITHER_2") if image else dict(qlevel=16, qmethod="NO_DITHER")
    return _write(tmp_path / "a.fits.fz", _image(), list(tile), compress="RICE", **quantize)


def _rewrite_descriptor(path, k: int, change):
    """Tile ``k``'s (count, offset) in the heap, rewritten in place as ``change(count, offset)``."""
    with fits.open(path, disable_image_compression=True) as f:
        assert f[1].header["TFORM1"].startswith("1PB") and f[1].header["TTYPE1"] == "COMPRESSED_DATA"
        at = f.fileinfo(1)["datLoc"] + k * f[1].header["NAXIS1"]  # two big-endian int32 open each row
    raw = bytearray(path.read_bytes())
    count, offset = (int.from_bytes(raw[i : i + 4], "big") for i in (at, at + 4))
    raw[at : at + 8] = b"".join(v.to_bytes(4, "big") for v in change(count, offset))
    path.write_bytes(bytes(raw))


def _astropy(path):
    with fits.open(path) as f:
        return np.asarray(f[1].data, np.float32)


def _ours(path, need=None, fill=np.nan):
    with fits.open(path) as f:
        image = TiledImage.of(f)
        assert image is not None
        out = np.full(image.shape, fill, np.float32)
        return image.read(out, need), image


@pytest.mark.parametrize("method, qlevel", [("SUBTRACTIVE_DITHER_2", -1e-4), ("SUBTRACTIVE_DITHER_1", 4),
                                            ("NO_DITHER", 16)], ids=["images (dither 2)", "dither 1", "invvar (none)"])
@pytest.mark.parametrize("tile", [[100, 100], [1, 173], [32, 50]], ids=["legacypipe 100x100", "rows", "32x50"])
@pytest.mark.parametrize("writer", ["CFITSIO", "astropy"])
def test_tiles_decode_to_astropys_pixels_bit_for_bit(tmp_path, method, qlevel, tile, writer):
    data = _image()
    path = tmp_path / "a.fits.fz"
    if writer == "CFITSIO":  # as legacypipe and fpack write them
        _write(path, data, tile, compress="RICE", qlevel=qlevel, qmethod=method, dither_seed=17)
    else:  # astropy's own compression: ZBLANK -2**31, GZIP_COMPRESSED_DATA on every file
        hdu = fits.CompImageHDU(data, compression_type="RICE_1", quantize_level=qlevel, tile_shape=tile,
                                quantize_method={"NO_DITHER": -1, "SUBTRACTIVE_DITHER_1": 1}.get(method, 2),
                                dither_seed=17)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    ours, image = _ours(path)
    theirs = _astropy(path)
    assert image.tile == tuple(tile) and image.shape == data.shape
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))  # NaN, -0.0 and all
    assert np.isnan(theirs).sum() >= 20


def test_gzip_stored_tiles_and_blank_values_are_decoded(tmp_path):
    """Constant tiles cannot be quantized (CFITSIO stores them losslessly with GZIP_1), NaNs become ZBLANK."""
    path = _coadd(tmp_path)
    with fits.open(path, disable_image_compression=True) as f:
        table = f[1].data
        assert (table["COMPRESSED_DATA"].shape[0] > 0) and any(len(c) == 0 for c in table["COMPRESSED_DATA"])
    ours, _ = _ours(path)
    np.testing.assert_array_equal(ours.view(np.uint32), _astropy(path).view(np.uint32))


def test_only_the_tiles_asked_for_are_written(tmp_path):
    path = _coadd(tmp_path, (32, 50), image=True)
    theirs = _astropy(path)
    need = np.zeros((8, 4), bool)  # 250x173 in 32x50 tiles
    need[0, 0] = need[3, 2] = need[7, 3] = True  # the last tile is 26x23 pixels
    ours, image = _ours(path, need, fill=-7.0)
    assert image.grid == (8, 4)
    written = np.kron(need, np.ones((32, 50), bool))[:250, :173]
    np.testing.assert_array_equal(ours[written].view(np.uint32), theirs[written].view(np.uint32))
    assert (ours[~written] == -7.0).all()


@pytest.mark.parametrize("compress", ["GZIP", "GZIP_2", "HCOMPRESS", None])
def test_other_compressions_are_left_to_astropy(tmp_path, compress):
    path = _write(tmp_path / "a.fits", _image(), [50, 50], compress=compress, qlevel=4)
    with fits.open(path) as f:
        assert TiledImage.of(f) is None


def test_the_tile_table_layout_follows_the_standard():
    header = fits.Header([("TFIELDS", 4), ("NAXIS1", 33), ("TTYPE1", "COMPRESSED_DATA"), ("TFORM1", "1QB(9)"),
                          ("TTYPE2", "ZSCALE"), ("TFORM2", "1D"), ("TTYPE3", "FLAGS"), ("TFORM3", "5X"),
                          ("TTYPE4", "ZZERO"), ("TFORM4", "D")])
    dtype = _table_dtype(header)
    assert dtype.itemsize == 33  # a descriptor of 2 int64, a double, 5 bits in one byte, a double
    assert [dtype.fields[n][1] for n in ("COMPRESSED_DATA", "ZSCALE", "ZZERO")] == [0, 16, 25]
    header["NAXIS1"] = 40
    with pytest.raises(TileError, match="33 bytes a row, its NAXIS1 says 40"):
        _table_dtype(header)


def test_a_tile_pointing_outside_the_heap_is_named(tmp_path):
    path = _coadd(tmp_path, (100, 100), image=True)
    _rewrite_descriptor(path, 4, lambda count, offset: (count, 10**8))
    with fits.open(path) as f, pytest.raises(TileError, match="tile 4: its COMPRESSED_DATA lies outside the heap"):
        TiledImage.of(f)


def _patch(path, **cards):
    """Set (None: delete) keywords of the tile table's own header, in place."""
    with fits.open(path, mode="update", disable_image_compression=True) as f:
        for key, value in cards.items():
            if value is None:
                del f[1].header[key]
            else:
                f[1].header[key] = value
    return path


@pytest.mark.parametrize("cards", [{"ZQUANTIZ": "NONE"}, {"ZQUANTIZ": None}, {"BSCALE": 1.0, "BZERO": 0.0}],
                         ids=["ZQUANTIZ NONE", "no ZQUANTIZ (no dither)", "BSCALE 1, BZERO 0"])
def test_what_astropy_reads_alike_is_decoded_alike(tmp_path, cards):
    path = _coadd(tmp_path)
    _patch(path, **cards)
    ours, _ = _ours(path)
    np.testing.assert_array_equal(ours.view(np.uint32), _astropy(path).view(np.uint32))


@pytest.mark.parametrize("cards", [{"BSCALE": 2.0}, {"ZVAL2": 2}, {"TSCAL2": 2.0}, {"TFORM1": "1PJ(600)"}],
                         ids=["BSCALE", "BYTEPIX 2", "a scaled ZSCALE column", "a heap of int32"])
def test_what_is_not_the_coadds_compression_is_left_to_astropy(tmp_path, cards):
    path = _coadd(tmp_path)
    with fits.open(path, disable_image_compression=True) as f:
        assert (f[1].header["ZNAME2"], f[1].header["TTYPE2"]) == ("BYTEPIX", "ZSCALE")
    with fits.open(_patch(path, **cards)) as f:
        assert TiledImage.of(f) is None


def test_a_gzipped_file_is_left_to_astropy(tmp_path):
    import gzip

    path = _coadd(tmp_path)
    zipped = tmp_path / "a.fits.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    with fits.open(zipped) as f:
        assert TiledImage.of(f) is None


def test_a_damaged_tile_is_named(tmp_path):
    path = _coadd(tmp_path, (100, 100), image=True)
    _rewrite_descriptor(path, 4, lambda count, offset: (count // 2, offset))  # half its bytes
    with fits.open(path) as f:
        image = TiledImage.of(f)
        out = np.zeros(image.shape, np.float32)
        image.read(out, np.eye(*image.grid, dtype=bool))  # tiles 0 and 3 of the 3x2 (rows x columns): whole
        with pytest.raises(TileError, match=r"tile 4 \(pixels from x=0, y=200\)"):
            image.read(out)
        with pytest.raises(ValueError, match=r"need: \(2, 2\), not the tile grid's \(3, 2\)"):
            image.read(out, np.ones((2, 2), bool))


# --- the start-up check of astropy's private codecs (fitstiles.decoder) and what the cutouts do without them ---


@pytest.fixture
def fresh_check():
    """fitstiles' start-up check made again in the test, and again after it (nothing it finds outlives the test)."""
    from realfake.inputs import fitstiles

    fitstiles.adopt(None)
    yield fitstiles
    fitstiles.adopt(None)


def _failing_codecs(how):
    """astropy's codecs as a later astropy might break them: other pixels, other arguments, gone."""
    from realfake.inputs import fitstiles

    decode, unquantize = fitstiles._codecs()
    def off_by_one(buf, *rest):
        return (np.frombuffer(decode(buf, *rest), np.int32) + 1).tobytes()

    def old_arguments(buf, blocksize, bytepix, n):
        return decode(buf, blocksize, bytepix)  # (TypeError: decode takes 4 arguments)

    def gone():
        raise ImportError("cannot import name 'decompress_rice_1_c'")

    return {"other pixels": lambda: (off_by_one, unquantize), "other arguments": lambda: (old_arguments, unquantize),
            "gone": gone}[how]


def test_the_start_up_check_passes_once_per_process(fresh_check, monkeypatch, caplog):
    import time

    import astropy

    t0 = time.perf_counter()
    checked = fresh_check.decoder()
    took = time.perf_counter() - t0
    assert checked.private and checked.note == f"realfake.inputs.fitstiles (checked against astropy {astropy.__version__})"
    assert took < 0.5, f"the start-up check took {took:.3f} s"  # ~12 ms
    monkeypatch.setattr(fresh_check, "_self_check", lambda: pytest.fail("checked twice"))
    assert fresh_check.decoder() is checked
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("how", ["other pixels", "other arguments", "gone"])
def test_codecs_that_fail_the_check_leave_the_files_to_astropy_saying_so_once(fresh_check, monkeypatch, caplog,
                                                                                tmp_path, how):
    path = _coadd(tmp_path, (50, 50), image=True)
    monkeypatch.setattr(fresh_check, "_codecs", _failing_codecs(how))
    with caplog.at_level("WARNING", logger="realfake.inputs.fitstiles"):
        for _ in range(3):
            with fits.open(path) as f:
                assert TiledImage.of(f) is None
    checked = fresh_check.decoder()
    assert not checked.private and checked.note.startswith("astropy ") and "public reader" in checked.note
    assert {"other pixels": "other pixels than astropy's reader", "other arguments": "TypeError",
            "gone": "ImportError"}[how] in checked.note
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "realfake.inputs.fitstiles is disabled" in warnings[0], warnings


def _attr(path, key):
    import h5py

    with h5py.File(path) as f:
        value = f.attrs[key]
    return value.decode() if isinstance(value, bytes) else str(value)


def test_a_brick_file_says_which_decoder_cut_it(brick_files):
    import astropy

    assert _attr(brick_files[0], "tile_decoder") == f"realfake.inputs.fitstiles (checked against astropy {astropy.__version__})"


def test_without_fitstiles_a_brick_is_cut_identically_by_astropys_reader(fresh_check, monkeypatch, mock_dr9,
                                                                        selection, brick_files, tmp_path):
    from conftest import assert_same_brick_file

    from realfake.cutouts.brickfile import DEFAULT_CHANNELS
    from realfake.cutouts.cut import make_brick_file

    root, cfg = mock_dr9
    monkeypatch.setattr(fresh_check, "_codecs", _failing_codecs("other pixels"))
    path = tmp_path / "1210p060.h5"
    make_brick_file(path, "1210p060", root / "release", root / "injection", cfg.rs, selection, 64, DEFAULT_CHANNELS)
    assert_same_brick_file(path, brick_files[0])
    assert _attr(path, "tile_decoder").startswith("astropy ")
    assert "public reader (realfake.inputs.fitstiles disabled: the SUBTRACTIVE_DITHER_2 test image decodes to other " \
           "pixels" in _attr(path, "tile_decoder")


def test_a_codec_error_on_a_good_file_is_not_called_damage(fresh_check, monkeypatch, mock_dr9, selection,
                                                            brick_files, tmp_path, caplog):
    """The check passed, then the codec raises on a file that astropy's reader reads: the brick is cut from astropy's
    pixels, the same stamps, with a warning and a note in its attributes; a really damaged tile is still named."""
    from conftest import assert_same_brick_file

    from realfake.inputs import coadds, layout
    from realfake.cutouts.brickfile import DEFAULT_CHANNELS
    from realfake.inputs.coadds import CoaddError, read_coadd
    from realfake.cutouts.cut import make_brick_file

    root, cfg = mock_dr9
    assert fresh_check.decoder().private
    decode, unquantize = fresh_check._codecs()

    def failing(buf, *args):
        raise RuntimeError("CFITSIO: decompression error")  # (what astropy's codec raises is its CfitsioException)

    monkeypatch.setattr(fresh_check, "_codecs", lambda: (failing, unquantize))
    monkeypatch.setattr(coadds, "PUBLIC_READS", [])
    path = tmp_path / "1210p060.h5"
    with caplog.at_level("WARNING", logger="realfake.inputs.coadds"):
        make_brick_file(path, "1210p060", root / "release", root / "injection", cfg.rs, selection, 64,
                        DEFAULT_CHANNELS)
    assert_same_brick_file(path, brick_files[0])
    note = _attr(path, "tile_decoder")
    assert note.startswith("realfake.inputs.fitstiles (checked against astropy")
    assert "astropy's public reader where realfake.inputs.fitstiles failed: " in note and "decompression error" in note
    assert "legacysurvey-1210p060-image-g.fits.fz" in note
    assert any("astropy's public reader could: its pixels are used" in r.getMessage() for r in caplog.records)

    monkeypatch.setattr(fresh_check, "_codecs", lambda: (decode, unquantize))  # a damaged tile: damaged for both
    for src, dst in zip(layout.coadd_files(root / "release", "1210p060"), layout.coadd_files(tmp_path, "1210p060")):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    _rewrite_descriptor(layout.coadd_file(tmp_path, "1210p060", "image", "r"), 4, lambda count, at: (count // 2, at))
    with pytest.raises(CoaddError, match=r"image-r.fits.fz: .*tile 4 \(pixels from x=100, y=100\)"):
        read_coadd(tmp_path, "1210p060")
