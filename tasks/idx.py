"""IDX files (the MNIST format), raw or gzip-compressed (yann.lecun.com/exdb/mnist).

Layout: a big-endian magic ``0x0000TTDD`` (TT = 0x08 for uint8, DD = number of dimensions),
each dimension as a big-endian uint32, then the raw bytes. Every problem raises a
``DataError`` that names the file.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from bench.errors import DataError

UINT8 = 0x08


def read_idx_bytes(path: str | Path) -> bytes:
    """The uncompressed content of an IDX file (``.gz`` is recognised by its magic bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip file ({exc}); download it again") from None
    return raw


def parse_idx(data: bytes, path: str | Path, *, ndim: int, shape: tuple | None = None) -> np.ndarray:
    """Parse uncompressed IDX ``data`` of uint8 with ``ndim`` dimensions.

    ``shape`` (optional) is the expected shape; ``None`` entries match anything. ``path`` is
    only used in messages.
    """
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX file (truncated?)")
    magic = int.from_bytes(data[:4], "big")
    expected = (UINT8 << 8) | ndim
    if magic != expected:
        kind = {1: "labels (idx1)", 3: "images (idx3)"}.get(ndim, f"idx{ndim}")
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected:08x} for uint8 {kind}; "
                        "not an MNIST IDX file of this kind (wrong or mislabelled file?)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes, need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < need:
        raise DataError(f"{path}: truncated: the header says shape {dims} ({need} bytes) but the file has "
                        f"{len(data)} bytes; download it again")
    if len(data) > need:
        raise DataError(f"{path}: {len(data) - need} unexpected bytes after the data of shape {dims}")
    if shape is not None:
        if len(shape) != ndim or any(s is not None and s != d for s, d in zip(shape, dims)):
            want = tuple("*" if s is None else s for s in shape)
            raise DataError(f"{path}: wrong count: shape {dims}, expected {want} (mislabelled or partial file?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable


def read_idx(path: str | Path, *, ndim: int, shape: tuple | None = None, md5: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or gz); optionally check the MD5 of its uncompressed content."""
    data = read_idx_bytes(path)
    arr = parse_idx(data, path, ndim=ndim, shape=shape)
    if md5 is not None:
        digest = hashlib.md5(data).hexdigest()
        if digest != md5:
            raise DataError(f"{path}: checksum mismatch: MD5 of the uncompressed content is {digest}, expected "
                            f"{md5} (corrupt or modified file); download it again")
    return arr


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write a uint8 array as IDX (gzip if ``compress`` or the name ends in .gz). For tests and tools."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = ((UINT8 << 8) | array.ndim).to_bytes(4, "big")
    data += b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
