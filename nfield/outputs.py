"""Where results go: a destination is checked before the work that fills it, and a file is written
whole or not at all.

A command's ``--out`` (a run directory, or a file such as a rendered image or a mesh) is checked
first, so a place that cannot be written (a read-only folder, a path under a file, /proc) or a file
type the command cannot write stops it with one line before minutes of training or rendering, not
after them.

Every file nfield writes for others to read (config.json, index files, meshes, exports, plots,
cached verdicts) goes through `write_atomic` or `atomic_path`: it is written under a temporary name
beside its place and renamed into it, so a reader, or a run stopped half-way, never finds half a
file; a write that fails leaves the file that was there before and no temporary behind.

Example::

    >>> writable_file(Path("renders/x4.png"), IMAGE_SUFFIXES, "an image")   # doctest: +SKIP
    >>> write_atomic(Path("runs/x/config.json"), "{}\\n")                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path` (same folder, so the rename cannot cross file systems) for a
    writer that needs a file name (savefig, safetensors); when the block ends without an error the
    file is renamed onto `path`, and in every case no temporary is left. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: Path | str, data: bytes | str, durable: bool = False) -> Path:
    """Write `data` (text as UTF-8) to `path` whole or not at all (`atomic_path`); `durable` also
    flushes it to the disk before the rename (meshes and exports that outlive the process)."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
    return Path(path)


#: The suffixes a matplotlib figure can be written as.
FIGURE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps")


def check_figure_path(out: Path) -> None:
    """NfieldError unless matplotlib can write a figure to `out` (known suffix, not a directory)."""
    suffix = out.suffix.lower().lstrip(".")
    shown = ", ".join(f".{f}" for f in FIGURE_FORMATS[:4])
    if not suffix:
        raise NfieldError(f"{out}: no file extension to choose the format by; use {shown}")
    if suffix not in FIGURE_FORMATS:
        raise NfieldError(f"{out}: cannot write '.{suffix}' figures; use {shown} (or .webp, .tif, .eps, .ps)")
    if out.is_dir():
        raise NfieldError(f"{out}: is a directory; give a file name such as {out / 'curves.png'}")


def write_figure(figure, out: Path) -> Path:
    """Write `figure` to `out` atomically (a temporary file beside it, then renamed)."""
    try:
        with atomic_path(out) as temporary:
            figure.savefig(temporary, format=out.suffix.lower().lstrip("."))
    except OSError as err:
        raise NfieldError(f"{out}: cannot write it ({err.strerror or err})") from None
    return out
