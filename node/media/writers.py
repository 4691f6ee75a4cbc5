"""The medium's plan written out: a folder, a zip (streamed), or an ISO 9660 image.

The zip goes to any writable stream, seekable or not (a file, an HTTP answer), one
instance at a time. The ISO is made by pycdlib from a folder staged beside it, so no
instance is held in memory either; level 1 names (8.3, upper case) are what STD-GEN-CD
asks for, and the file ids already fit them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from node.media.dicomdir import MediaError
from node.media.export import MediaPlan

Progress = Callable[[], None]  # told once per file written
FORMATS = ("zip", "iso", "folder")
# Deflate's fastest level: uncompressed pixel data shrinks by half or more, at a small
# cost in CPU next to the transcoding.
ZIP_LEVEL = 1


def _done(progress: Progress | None) -> None:
    if progress is not None:
        progress()


def write_folder(plan: MediaPlan, dest: Path, progress: Progress | None = None) -> int:
    """Write the medium's files under ``dest`` (absent or empty); returns the bytes
    written."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise MediaError(f"{dest} exists and is not an empty folder")
    total = 0
    for entry in plan:
        target = dest.joinpath(*entry.path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        data = entry.produce()
        target.write_bytes(data)
        total += len(data)
        _done(progress)
    return total


def write_zip(plan: MediaPlan, sink: BinaryIO, progress: Progress | None = None) -> None:
    """Stream the medium as a zip into ``sink``: entries are written as they are
    produced (data descriptors where ``sink`` cannot seek)."""
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL) as zf:
        for entry in plan:
            info = zipfile.ZipInfo(entry.path)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entry.produce(), compresslevel=ZIP_LEVEL)
            _done(progress)


def write_iso(plan: MediaPlan, dest: Path, volume: str = "PACSMESH",
              progress: Progress | None = None) -> None:
    """Write the medium as an ISO 9660 (level 1) image at ``dest``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pacsmesh-media-", dir=dest.parent))
    try:
        write_folder(plan, staging / "root", progress)
        partial = staging / "image.iso"
        iso_from_folder(staging / "root", partial, volume)
        os.replace(partial, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def iso_from_folder(root: Path, dest: Path, volume: str = "PACSMESH") -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=volume[:32], sys_ident="PACSMESH",
            app_ident_str="PACSMESH")
    try:
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            rel = Path(dirpath).relative_to(root)
            for name in dirs:
                iso.add_directory(_iso_path(rel / name, directory=True))
            for name in sorted(files):
                iso.add_file(str(Path(dirpath) / name), _iso_path(rel / name))
        iso.write(str(dest))
    except PyCdlibException as exc:
        raise MediaError(f"cannot write the ISO image: {exc}") from None
    finally:
        iso.close()


def _iso_path(rel: Path, directory: bool = False) -> str:
    path = "/" + "/".join(rel.parts)
    if directory:
        return path
    # ISO 9660 file identifiers always carry the separator and a version (PS3.12 F.3).
    return path + ("" if "." in rel.name else ".") + ";1"
