"""Where results go: a destination is checked before the work that fills it.

A command's ``--out`` (a run directory, or a file such as a rendered image or a mesh) is checked
first, so a place that cannot be written (a read-only folder, a path under a file, /proc) or a file
type the command cannot write stops it with one line before minutes of training or rendering, not
after them.

Example::

    >>> writable_file(Path("renders/x4.png"), IMAGE_SUFFIXES, "an image")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nfield.errors import NfieldError

#: Files `render-image` writes: 8-bit PNG/JPEG/BMP/WebP, or float32 TIFF (raw values).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def check_writable_directory(path: Path | str, flag: str = "--out") -> Path:
    """`NfieldError` (naming `flag` and the reason) unless `path` is, or can be made, a directory this
    process can write files into; creates nothing (the probe is a temporary folder in the nearest
    existing parent, removed again), so a command refused later leaves no trace."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NfieldError(f"{flag} {path}: exists and is not a directory")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise NfieldError(f"{flag} {path}: cannot write there ({existing} is a file, not a directory)")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".nfield-write-check-"))
    except OSError as err:
        raise NfieldError(f"{flag} {path}: cannot write there ({err.strerror or type(err).__name__})") from None
    return path


def writable_directory(path: Path | str, flag: str = "--out") -> Path:
    """`path` as a directory this process can write files into, created with its parents when
    missing; `NfieldError` naming `flag` and the reason otherwise."""
    path = check_writable_directory(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NfieldError(f"{flag} {path}: cannot write there ({err.strerror or type(err).__name__})") from None
    return path


def writable_file(path: Path | str, suffixes: tuple[str, ...], kind: str, flag: str = "--out") -> Path:
    """`path` as a file of one of `suffixes` (`kind` names what it holds, for the message) whose
    folder can be written (or made); `NfieldError` in one line otherwise. Creates nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        named = f"'{suffix}'" if suffix else "a file without an extension"
        raise NfieldError(f"{flag} {path}: cannot write {kind} as {named}; use {', '.join(suffixes)}")
    if path.is_dir():
        raise NfieldError(f"{flag} {path}: is a directory; give a file name such as {path / ('out' + suffixes[0])}")
    check_writable_directory(path.parent, flag)
    return path
