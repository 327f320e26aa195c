"""Reading speech audio: NIST SPHERE headers, WAV / FLAC / uncompressed SPHERE samples and lengths,
and finding the audio files under a folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.errors import DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".sph", ".nist")
SPH2PIPE_HINT = ("convert it to uncompressed audio with LDC's sph2pipe, e.g. `sph2pipe -f wav {name} {name}.wav` "
                 "(a converted `{name}.wav` next to the original is used instead of it)")


def sphere_header(path: str | Path) -> dict | None:
    """The fields of a NIST SPHERE header (``{"header_size": 1024, "sample_rate": 16000, ...}``),
    or ``None`` if the file does not start with ``NIST_1A``."""
    with open(path, "rb") as f:
        head = f.read(1024)
        if not head.startswith(b"NIST_1A"):
            return None
        lines = head.split(b"\n")
        try:
            size = int(lines[1].strip())
        except (IndexError, ValueError):
            raise DataError(f"{path}: malformed NIST SPHERE header (no header size on line 2)") from None
        if size > len(head):
            head += f.read(size - len(head))
    fields: dict = {"header_size": size}
    for line in head[:size].decode("ascii", "replace").splitlines()[2:]:
        if line.strip() == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        name, kind, value = parts
        if kind == "-i":
            try:
                fields[name] = int(value)
            except ValueError:
                fields[name] = value.strip()
        else:
            fields[name] = value.strip()
    return fields


def check_sphere(path: str | Path, header: dict) -> None:
    """Reject compressed SPHERE (shorten, wavpack, shortpack), which libsndfile cannot read."""
    coding = str(header.get("sample_coding", "pcm")).lower()
    byte_format = str(header.get("sample_byte_format", "")).lower()
    if any(c in coding for c in ("shorten", "wavpack")) or "shortpack" in byte_format:
        field = f"sample_coding {coding}" if "shortpack" not in byte_format else f"sample_byte_format {byte_format}"
        raise DataError(f"{path}: compressed NIST SPHERE ({field}) cannot be read; "
                        + SPH2PIPE_HINT.format(name=Path(path).name))


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(first channel as float32 in [-1, 1), sample rate) of a WAV, FLAC or uncompressed SPHERE file."""
    import soundfile as sf

    header = sphere_header(path)
    if header is not None:
        check_sphere(path, header)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise DataError(f"{path}: cannot read audio ({exc}); supported: RIFF WAV, FLAC and uncompressed "
                        "NIST SPHERE (16-bit PCM)") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: the audio file has no samples")
    return np.ascontiguousarray(data[:, 0]), int(sr)


def audio_length(path: str | Path) -> tuple[int, int]:
    """(number of samples, sample rate) from the header, without decoding."""
    import soundfile as sf

    header = sphere_header(path)
    if header is not None and "sample_count" in header and "sample_rate" in header:
        return int(header["sample_count"]), int(header["sample_rate"])
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read the audio header ({exc})") from None
    return int(info.frames), int(info.samplerate)


def find_audio(root: str | Path) -> list[Path]:
    """Every WAV/FLAC/SPHERE file under ``root`` (any case), sorted; hidden folders skipped.

    Where a converted copy sits next to its original (``X.WAV`` and ``X.WAV.wav``, as some
    TIMIT copies have), one is kept: the original, unless it is compressed SPHERE.
    """
    root = Path(root)
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                p = Path(dirpath) / name
                stem = str(p.relative_to(root)).lower()
                while Path(stem).suffix in AUDIO_EXTENSIONS:
                    stem = stem[: -len(Path(stem).suffix)]
                found.setdefault(stem, []).append(p)
    return [v[0] if len(v) == 1 else pick_readable(sorted(v, key=lambda p: (len(p.name), p.name)))
            for _, v in sorted(found.items())]


def pick_readable(candidates: list[Path]) -> Path:
    """The first candidate that is not compressed SPHERE (else the first, whose read gives the error)."""
    for p in candidates:
        header = sphere_header(p)
        if header is None:
            return p
        try:
            check_sphere(p, header)
            return p
        except DataError:
            continue
    return candidates[0]
