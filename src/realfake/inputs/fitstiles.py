"""Tile-compressed FITS images (the coadds) decompressed tile by tile, into a buffer the caller reuses.

astropy decodes a compressed HDU with its own C codecs (CFITSIO's RICE decoder
and unquantizer), but drives them from Python with several copies and checks per
tile: for a 3600x3600 plane of 100x100 tiles, about a third of its time. This
module reads the tile table and heap as the FITS standard lays them out, calls
the same codecs with the same arguments in a lean loop, and writes each tile
straight into the caller's buffer, for the tiles asked for only: the pixels are
astropy's, bit for bit (tested), in ~15% less time, and a part of a file costs
the decoding of its tiles only (astropy's sections cost ~0.5 ms a call more).

Only the compression the coadds use is taken: RICE_1 of quantized float32 images
in a file that is not itself gzipped (any dither, ZBLANK or not, tiles stored
losslessly with GZIP_1 where quantizing failed). For anything else (other
compressions, BSCALE/BZERO, byte-typed heap columns other than 'B', scaled
table columns) ``TiledImage.of`` answers None and the caller uses astropy's
reader.

astropy's codecs are private, so they are checked before use, once per process
(``decoder()``, ~12 ms): a small image with what the coadds hold (dither 2 and
no dither, NaN as ZBLANK, a tile stored with GZIP_1), compressed by CFITSIO
(fitsio) as the coadds are, is decoded here and by astropy's public reader, and
the two compared bit for bit. Where an astropy lacks the codecs, calls them
differently, or decodes other pixels, ``TiledImage.of`` answers None for every
file (astropy's reader is used: the same pixels, more slowly), the job's log
says so once, and ``decoder().note`` (written into each brick file's
attributes) says which reader was used and why. An error raised while decoding
a file is for the caller to check with astropy's reader before calling the
file damaged (realfake.inputs.coadds does).
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

DITHER = {"NONE": 0, "NO_DITHER": -1, "SUBTRACTIVE_DITHER_1": 1, "SUBTRACTIVE_DITHER_2": 2}  # ZQUANTIZ, as astropy
_FIELD_BYTES = dict(L=1, B=1, I=2, J=4, K=8, A=1, E=4, D=8, C=8, M=16, P=8, Q=16)
_SCALARS = dict(I=">i2", J=">i4", K=">i8", E=">f4", D=">f8")


def _codecs():
    """astropy's RICE decoder and unquantizer (astropy >= 6; imported when first needed); ImportError without them."""
    from astropy.io.fits.hdu.compressed._compression import decompress_rice_1_c, unquantize_float_c

    return decompress_rice_1_c, unquantize_float_c


@dataclass(frozen=True)
class Decoder:
    """Which reader decodes the RICE coadds in this process, as the start-up check found."""

    private: bool  # True: this module, on astropy's private codecs; False: astropy's public reader
    note: str  # what was used and why, for the log and the brick files' attributes


_DECODER: Decoder | None = None


def decoder() -> Decoder:
    """The reader for RICE coadds in this process: checked on first use (``check_codecs``), then remembered."""
    global _DECODER
    if _DECODER is None:
        _DECODER = check_codecs()
    return _DECODER


def adopt(checked: Decoder | None) -> None:
    """Take another process's answer (a pool's workers: the job's one check, logged once); None: check again."""
    global _DECODER
    _DECODER = checked


def check_codecs() -> Decoder:
    """Decode a known image with this module (astropy's private codecs) and with astropy's public reader; the
    decoder to use: this module where both agree bit for bit, else astropy's reader, with a warning in the log."""
    import astropy

    version = astropy.__version__
    try:
        mismatch = _self_check()
    except Exception as err:  # ImportError (codecs gone), AttributeError, TypeError (new arguments), CFITSIO's
        mismatch = f"{type(err.__cause__ or err).__name__}: {' '.join(str(err).split())[:200]}"  # (TileError's cause)
    if mismatch is None:
        return Decoder(True, f"realfake.inputs.fitstiles (checked against astropy {version})")
    log.warning("realfake.inputs.fitstiles is disabled in this process: astropy %s's private codecs failed the start-up "
                "check (%s); RICE coadds are read with astropy's public reader (the same pixels, more slowly)",
                version, mismatch)
    return Decoder(False, f"astropy {version} public reader (realfake.inputs.fitstiles disabled: {mismatch})")


def _check_image() -> np.ndarray:
    """A small image with what coadds hold: noise, a bright source, zeros, NaN, a constant tile (which CFITSIO
    stores with GZIP_1 when not dithering)."""
    rng = np.random.default_rng(11)
    a = rng.normal(0.0, 0.05, (40, 37)).astype(np.float32)
    a[3:6, 4:9] += 30.0
    a[20:36, 20:] = 0.0
    a[0:16, 16:32] = 0.25  # one whole 16x16 tile: stored losslessly (GZIP_1)
    a[[5, 17, 30], [2, 33, 9]] = np.nan
    return a


def _self_check() -> str | None:
    """None where this module decodes RICE images as astropy's public reader does; else what differs.

    The test image is compressed by CFITSIO (fitsio), as legacypipe compresses the coadds: ~10 ms in all (astropy's
    own compression would take three times as long)."""
    import tempfile

    import fitsio
    from astropy.io import fits

    methods = {"SUBTRACTIVE_DITHER_2": -1e-4, "NO_DITHER": 16}  # the coadd images' and the invvars' (dither 1 is
    data = _check_image()  # decoded by the same codecs: only an argument to the unquantizer differs)
    with tempfile.TemporaryDirectory(prefix="realfake-fitstiles-") as tmp:
        path = f"{tmp}/check.fits.fz"
        with fitsio.FITS(path, "rw", clobber=True) as f:
            for method, qlevel in methods.items():
                f.write(data, compress="RICE", tile_dims=[16, 16], qlevel=qlevel, qmethod=method, dither_seed=9)
        with open(path, "rb") as f:
            raw = f.read()
    with fits.open(io.BytesIO(raw)) as f:
        for (method, (start, data_at, end)), hdu in zip(zip(methods, _extensions(raw)), f[1:]):
            theirs = np.asarray(hdu.data, np.float32).view(np.uint32)
            image = TiledImage.parse(raw[start:end], data_at - start, hdu.header)
            if image is None:
                return f"the {method} test image is not one this module takes"
            ours = image.read(np.full(image.shape, -7.0, np.float32)).view(np.uint32)
            if ours.shape != theirs.shape or (ours != theirs).any():
                return (f"the {method} test image decodes to other pixels than astropy's reader gives "
                        f"({int((ours != theirs).sum()) if ours.shape == theirs.shape else 'all'} of {theirs.size})")
    return None


def _extensions(raw: bytes):
    """(header start, data start, data end) of each extension of the FITS file ``raw``, as the standard lays them
    out (header and data in blocks of 2880 bytes)."""
    from astropy.io import fits

    at = 0
    while at < len(raw):
        end = at
        while not any(raw[end + i : end + i + 80].startswith(b"END ") for i in range(0, 2880, 80)):
            end += 2880
            if end >= len(raw):
                raise ValueError(f"a header from byte {at} has no END card")
        header = fits.Header.fromstring(raw[at : end + 2880])
        axes = [header[f"NAXIS{i}"] for i in range(1, header["NAXIS"] + 1)]
        size = abs(header["BITPIX"]) // 8 * int(np.prod(axes)) + header.get("PCOUNT", 0) if axes else 0
        if at:
            yield at, end + 2880, end + 2880 + size
        at = end + 2880 + -(-size // 2880) * 2880


class TileError(ValueError):
    """A tile that cannot be decoded; the message names the tile."""


def _table_dtype(header) -> np.dtype:
    """The numpy layout of a binary table's rows: its scalar columns and heap descriptors (count, offset)."""
    names, formats, offsets, at = [], [], [], 0
    for i in range(1, header["TFIELDS"] + 1):
        tform = header[f"TFORM{i}"].strip()
        digits = len(tform) - len(tform.lstrip("0123456789"))
        repeat, code = int(tform[:digits] or 1), tform[digits]
        if code in "PQ":
            if tform[digits + 1 : digits + 2] != "B":  # (an array of bytes in the heap: what CFITSIO writes)
                at += _FIELD_BYTES[code]
                continue
            names.append(header[f"TTYPE{i}"].strip())
            formats.append((">i4" if code == "P" else ">i8", (2,)))
            offsets.append(at)
            at += _FIELD_BYTES[code]
            continue
        if code in _SCALARS and repeat == 1:
            names.append(header[f"TTYPE{i}"].strip())
            formats.append(_SCALARS[code])
            offsets.append(at)
        at += (repeat + 7) // 8 if code == "X" else repeat * _FIELD_BYTES[code]
    if at != header["NAXIS1"]:
        raise TileError(f"the tile table's columns take {at} bytes a row, its NAXIS1 says {header['NAXIS1']}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": at})


class TiledImage:
    """HDU 1 of an open astropy HDUList, a RICE_1 quantized float32 image: its tile table and heap, read at once."""

    @classmethod
    def of(cls, hdul) -> TiledImage | None:
        """The tiled image of ``hdul[1]``, or None where this module does not take its compression."""
        from astropy.io import fits

        hdu = hdul[1]
        if not isinstance(hdu, fits.CompImageHDU) or hdul.filename() is None or not decoder().private:
            return None
        info = hdul.fileinfo(1)
        with open(hdul.filename(), "rb") as f:  # the HDU's header, tile table and heap
            f.seek(info["hdrLoc"])
            raw = f.read(info["datLoc"] + info["datSpan"] - info["hdrLoc"])
        return cls.parse(raw, info["datLoc"] - info["hdrLoc"], hdu.header)

    @classmethod
    def parse(cls, raw: bytes, data_at: int, image_header) -> TiledImage | None:
        """The tiled image in ``raw`` (a compressed HDU's header, tile table and heap; the table at ``data_at``),
        whose image header (astropy's CompImageHDU.header) is ``image_header``; None as for ``of``."""
        from astropy.io import fits

        if not raw.startswith(b"XTENSION"):  # a gzipped file (astropy's offsets are into its unzipped bytes)
            return None
        header = fits.Header.fromstring(raw[:data_at])  # the table's own header: ZCMPTYPE, TFORMn, ...
        if (header.get("ZCMPTYPE") not in ("RICE_1", "RICE_ONE") or header.get("ZBITPIX") != -32
                or header.get("ZNAXIS") != 2 or header.get("ZQUANTIZ", "NO_DITHER") not in DITHER
                or _setting(header, "BYTEPIX", 4) != 4 or image_header.get("BSCALE", 1) != 1
                or image_header.get("BZERO", 0) != 0 or any(k.startswith(("TSCAL", "TZERO")) for k in header)):
            return None
        rows = np.frombuffer(raw, _table_dtype(header), count=header["NAXIS2"], offset=data_at)
        columns = {header[f"TTYPE{i}"].strip() for i in range(1, header["TFIELDS"] + 1)}
        if (not {"COMPRESSED_DATA", "ZSCALE", "ZZERO"} <= columns or "UNCOMPRESSED_DATA" in columns
                or columns & {"COMPRESSED_DATA", "GZIP_COMPRESSED_DATA", "ZSCALE", "ZZERO", "ZBLANK"}
                - set(rows.dtype.names)):  # a column of a kind not taken here
            return None
        return cls(header, rows, raw, data_at, image_header.get("BLANK"))

    def __init__(self, header, rows, raw: bytes, data_at: int, blank=None):
        self.shape = (header["ZNAXIS2"], header["ZNAXIS1"])
        self.tile = (header.get("ZTILE2", 1), header.get("ZTILE1", self.shape[1]))  # (rows, columns)
        self.grid = (-(-self.shape[0] // self.tile[0]), -(-self.shape[1] // self.tile[1]))
        if len(rows) != self.grid[0] * self.grid[1]:
            raise TileError(f"{len(rows)} tiles in the table, {self.grid[0]}x{self.grid[1]} in a {self.shape[1]}x"
                            f"{self.shape[0]} image of {self.tile[1]}x{self.tile[0]} tiles")
        table = header["NAXIS1"] * header["NAXIS2"]
        gap = header.get("THEAP", table) - table  # PCOUNT counts the bytes between the table and the heap too
        if not 0 <= gap <= header["PCOUNT"]:
            raise TileError(f"THEAP {table + gap} does not lie within the {header['PCOUNT']} bytes after the table")
        self.heap = np.frombuffer(raw, np.uint8, count=header["PCOUNT"] - gap, offset=data_at + table + gap)
        self.decode, self.unquantize = _codecs()
        self.blocksize = _setting(header, "BLOCKSIZE", 32)
        self.dither, self.seed = DITHER[header.get("ZQUANTIZ", "NO_DITHER")], header.get("ZDITHER0", 0)
        self.rice = rows["COMPRESSED_DATA"].astype(np.int64)
        names = rows.dtype.names
        self.gzip = rows["GZIP_COMPRESSED_DATA"].astype(np.int64) if "GZIP_COMPRESSED_DATA" in names else None
        self.scale, self.zero = rows["ZSCALE"].tolist(), rows["ZZERO"].tolist()
        self.zblank = rows["ZBLANK"].tolist() if "ZBLANK" in names else [header.get("ZBLANK", blank)] * len(rows)
        for name, desc in (("COMPRESSED_DATA", self.rice), ("GZIP_COMPRESSED_DATA", self.gzip)):
            bad = [] if desc is None else np.flatnonzero((desc < 0).any(axis=1) | (desc.sum(axis=1) > len(self.heap)))
            if len(bad):
                raise TileError(f"tile {bad[0]}: its {name} lies outside the heap of {len(self.heap)} bytes")

    def read(self, out: np.ndarray, need: np.ndarray | None = None) -> np.ndarray:
        """Decompress the tiles where ``need`` (a bool array over the tile grid; all by default) into ``out``
        (float32, the image's shape), which is left as it was elsewhere."""
        if out.shape != self.shape or out.dtype != np.float32:
            raise ValueError(f"out: {out.shape} {out.dtype}, not the image's {self.shape} float32")
        if need is not None and need.shape != self.grid:
            raise ValueError(f"need: {need.shape}, not the tile grid's {self.grid}")
        ty, tx = self.tile
        ny, nx = self.shape
        tiles = range(len(self.rice)) if need is None else np.flatnonzero(need.ravel()).tolist()
        for k in tiles:
            y0, x0 = (k // self.grid[1]) * ty, (k % self.grid[1]) * tx
            h, w = min(ty, ny - y0), min(tx, nx - x0)
            try:
                out[y0 : y0 + h, x0 : x0 + w] = self._tile(k, h * w).reshape(h, w)
            except TileError:
                raise
            except Exception as err:  # CFITSIO's and zlib's errors name no tile
                raise TileError(f"tile {k} (pixels from x={x0}, y={y0}): {err}") from err
        return out

    def _tile(self, k: int, n: int) -> np.ndarray:
        """Tile ``k`` (row-major in the tile grid) of ``n`` pixels, decoded as astropy decodes it."""
        count, at = self.rice[k]
        if count == 0:  # quantizing failed: the floats are stored losslessly
            if self.gzip is None:
                raise TileError(f"tile {k}: no compressed data")
            count, at = self.gzip[k]
            data = zlib.decompress(self.heap[at : at + count], 31)
            if len(data) not in (4 * n, 8 * n):
                raise TileError(f"tile {k}: {len(data)} bytes of GZIP data for {n} pixels")
            return np.frombuffer(data, ">f4" if len(data) == 4 * n else ">f8")
        ints = self.decode(self.heap[at : at + count], self.blocksize, 4, n)
        quantized = np.frombuffer(ints, np.int32, n)
        blank = None if self.zblank[k] is None else quantized == self.zblank[k]
        if self.dither == -1:
            values = quantized * self.scale[k] + self.zero[k]
        else:
            values = np.frombuffer(self.unquantize(ints, k + self.seed, n, self.scale[k], self.zero[k],
                                                      self.dither, 0, 0, 0.0, 4), np.float32)
        if blank is not None and blank.any():
            values = values.copy()
            values[blank] = np.nan
        return values


def _setting(header, name: str, default):
    """A compression parameter (ZNAMEn = name, ZVALn = value) of the tile table's header."""
    for i in range(1, 1000):
        key = header.get(f"ZNAME{i}")
        if key is None:
            return default
        if key.strip().upper() == name:
            return header.get(f"ZVAL{i}", default)
    return default
