"""A medium to read: a folder (a mounted disc, a USB stick), a zip, or an ISO 9660 image.

Each gives the names of its files (``/``-separated, relative to its root) and reads one
file at a time. Nothing is ever extracted to disk under a name the medium chose, so no
name on it (``../``, absolute, a link) can reach outside it; a folder's links that lead
out are refused. Zip archives are checked against zip bombs before anything is read:
the sizes they declare, then the real bytes against what was declared.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from node.media.dicomdir import MediaError


@dataclass(frozen=True)
class Limits:
    """How much one medium may unpack to, by what its zip declares (checked before a
    byte is unpacked; no member yields more than it declares). A DVD holds 8.5 GB and a
    USB stick more, but no study needs 64 GiB; one member is read whole, so it may be as
    large as one HTTP upload of an instance (node/http/access_routes.py) and no larger.
    No ratio of packed to unpacked size is asked: a blank image deflates a thousandfold,
    as a bomb does."""

    total_bytes: int = 64 * 2**30
    file_bytes: int = 2**30


class Medium(Protocol):
    label: str

    def names(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...

    def close(self) -> None: ...


class FolderMedium:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.label = str(root)

    def names(self) -> list[str]:
        out = []
        for dirpath, dirs, files in os.walk(self.root):
            dirs.sort()
            rel = Path(dirpath).relative_to(self.root)
            out += [(rel / name).as_posix() for name in sorted(files)]
        return out

    def read(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise MediaError(f"{name} leads outside the medium")
        return path.read_bytes()

    def close(self) -> None:
        pass


class ZipMedium:
    def __init__(self, source: Path | BinaryIO, label: str,
                 limits: Limits | None = None) -> None:
        self.label = label
        self.limits = limits or Limits()
        try:
            self.zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise MediaError(f"{label} is not a whole zip archive (truncated or damaged):"
                             f" {exc}") from None
        self._infos = {i.filename: i for i in self.zf.infolist() if not i.is_dir()}
        self._check_sizes()

    def _check_sizes(self) -> None:
        lim = self.limits
        total = sum(i.file_size for i in self._infos.values())
        if total > lim.total_bytes:
            raise MediaError(f"{self.label} would unpack to {total} bytes, more than the"
                             f" limit of {lim.total_bytes}: refused as a zip bomb")
        for info in self._infos.values():
            if info.file_size > lim.file_bytes:
                raise MediaError(f"{self.label}: member {info.filename!r} unpacks from"
                                 f" {info.compress_size} to {info.file_size} bytes, more"
                                 f" than the limit of {lim.file_bytes}: refused as a zip"
                                 " bomb")

    def names(self) -> list[str]:
        return list(self._infos)

    def read(self, name: str) -> bytes:
        info = self._infos[name]
        try:
            with self.zf.open(info) as fh:
                # Never more than declared: a member lying about its size stops here.
                data = fh.read(info.file_size + 1)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
            raise MediaError(f"{self.label}: member {name!r} is damaged: {exc}") from None
        if len(data) != info.file_size:
            raise MediaError(f"{self.label}: member {name!r} does not hold the"
                             f" {info.file_size} bytes it declares: refused")
        return data

    def close(self) -> None:
        self.zf.close()


class IsoMedium:
    def __init__(self, source: BinaryIO, label: str) -> None:
        """``source`` stays open (the caller's) while this is."""
        self.label = label
        self.iso = pycdlib.PyCdlib()
        try:
            self.iso.open_fp(source)
            self._paths = {_plain(p): p for p in self._walk()}
        except PyCdlibException as exc:
            raise MediaError(f"{label} is not a readable ISO 9660 image: {exc}") from None

    def _walk(self) -> list[str]:
        out = []
        for dirpath, _dirs, files in self.iso.walk(iso_path="/"):
            out += [f"{dirpath.rstrip('/')}/{name}" for name in files]
        return out

    def names(self) -> list[str]:
        return sorted(self._paths)

    def read(self, name: str) -> bytes:
        out = io.BytesIO()
        try:
            self.iso.get_file_from_iso_fp(out, iso_path=self._paths[name])
        except PyCdlibException as exc:
            raise MediaError(f"{self.label}: {name} cannot be read: {exc}") from None
        return out.getvalue()

    def close(self) -> None:
        self.iso.close()


def _plain(iso_path: str) -> str:
    """``/PT000000/IM000000.;1`` -> ``PT000000/IM000000``: the name without ISO 9660's
    version and empty extension."""
    name = iso_path.lstrip("/").split(";")[0]
    return name[:-1] if name.endswith(".") else name


class _Owning:
    """A medium read from a file this opened, closed with it."""

    def __init__(self, medium: Medium, fh: BinaryIO) -> None:
        self.medium, self.fh, self.label = medium, fh, medium.label

    def names(self) -> list[str]:
        return self.medium.names()

    def read(self, name: str) -> bytes:
        return self.medium.read(name)

    def close(self) -> None:
        try:
            self.medium.close()
        finally:
            self.fh.close()


def open_medium(path: Path, limits: Limits | None = None) -> Medium:
    """The medium at ``path``: a folder, a zip or an ISO 9660 image (by content,
    whatever the name). Raises MediaError."""
    if path.is_dir():
        return FolderMedium(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise MediaError(f"cannot open {path}: {exc.strerror}") from None
    try:
        return _Owning(medium_from_file(fh, str(path), limits), fh)
    except BaseException:
        fh.close()
        raise


def medium_from_file(fh: BinaryIO, label: str, limits: Limits | None = None) -> Medium:
    """The medium in an open, seekable file (an upload); the caller closes ``fh``."""
    kind = media_kind(fh)
    fh.seek(0)
    if kind == "zip":
        return ZipMedium(fh, label, limits)
    if kind == "iso":
        return IsoMedium(fh, label)
    raise MediaError(f"{label} is neither a zip archive nor an ISO 9660 image")


def media_kind(fh: BinaryIO) -> str | None:
    """``zip``, ``iso`` or None, from the file's first bytes (a truncated zip still
    starts as one)."""
    head = fh.read(4)
    fh.seek(32769)  # the primary volume descriptor's "CD001" (ECMA-119 8.4)
    iso_magic = fh.read(5)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if iso_magic == b"CD001":
        return "iso"
    return None


def is_medium(path: Path) -> bool:
    """Whether ``pacsmesh import`` reads ``path`` as a medium: a zip, an ISO image, or a
    folder with a DICOMDIR at its root (any other folder is a heap of files)."""
    if path.is_dir():
        return any(p.name.upper() == "DICOMDIR" and p.is_file() for p in path.iterdir())
    try:
        with path.open("rb") as fh:
            return media_kind(fh) is not None
    except OSError:
        return False
