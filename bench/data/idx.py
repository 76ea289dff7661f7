"""A small reader (and writer) for the IDX format used by MNIST and Fashion-MNIST.

We read the files ourselves rather than through torchvision because torchvision checks MD5 sums
of the *compressed* files, and Debian's ``dataset-fashion-mnist`` ships re-compressed ``.gz``
files whose sums differ although the data is identical.

Format: two zero bytes, a type code, the number of dimensions ``n``, then ``n`` big-endian
uint32 sizes, then the data in C order, big-endian.
"""
from __future__ import annotations

import gzip
import zlib
import struct
from pathlib import Path

import numpy as np

from bench.errors import BenchError

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Whole file, gunzipped when it is gzip (sniffed from the magic, not the suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise BenchError(f"{path}: corrupt gzip file ({exc})") from None
    return raw


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian numpy array (a copy, so it is writable)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise BenchError(f"{source}: not an IDX file (bad magic)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise BenchError(f"{source}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BenchError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64)) if ndim else 1
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        raise BenchError(f"{source}: IDX size mismatch: header says {expected} bytes, file has {len(data)}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read a plain or gzipped IDX file."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX, gzipped when ``path`` ends in ``.gz`` (used by tests and fixtures)."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise BenchError(f"{path}: IDX cannot store dtype {array.dtype}")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path
