"""The OHIF Viewer's files in the data dir: installed from its npm tarball, checked, atomically.

npm publishes every version's tarball with an SRI integrity hash (sha512). The pinned
version's hash is a constant here, so a tarball from the registry, from a file or from another
member is checked the same way, and no member can hand the site other code to run in its
browsers. Only ``package/dist/`` is kept (a ready web app); the tarball itself stays beside
it, so this node can give the same verified bytes to members without internet.

Layout: ``viewer/current`` is a symlink to ``viewer/ohif-<version>-<random>/`` holding
``dist/``, ``package.tgz`` and ``installed.json``; an install extracts into a temporary
dir, renames it into place and swaps the symlink, so a reader sees the old viewer or the
new one, never half of either.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import secrets
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from node.errors import LocalFailure

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
INTEGRITY = ("sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq"
             "+jd5xXZB9E8EA==")
VIEWER_DIR, CURRENT, DIST, ARCHIVE, RECORD = "viewer", "current", "dist", "package.tgz", \
    "installed.json"
_KEEP = "package/dist/"
# Text assets worth a .gz twin: aiohttp's FileResponse sends it to clients that accept gzip,
# so the 7 MB bundles cost their compression once, here, not on every page load.
_COMPRESS = (".js", ".css", ".html", ".json", ".svg", ".wasm", ".txt")  # not .map: devtools only
_COMPRESS_MIN = 1024


class ViewerInstallError(LocalFailure):
    """A viewer tarball was refused or could not be installed; nothing was changed."""


@dataclass(frozen=True)
class Installed:
    root: Path
    version: str
    integrity: str
    source: str
    files: int
    bytes: int

    @property
    def dist(self) -> Path:
        return self.root / DIST

    @property
    def archive(self) -> Path:
        return self.root / ARCHIVE


def integrity_of(path: Path) -> str:
    """The SRI string npm publishes for a tarball (``sha512-`` and base64)."""
    h = hashlib.sha512()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def installed(data_dir: Path) -> Installed | None:
    """The viewer ``data_dir`` serves, or None when none is installed."""
    root = data_dir / VIEWER_DIR / CURRENT
    try:
        record = json.loads((root / RECORD).read_text())
        return Installed(root.resolve(), str(record["version"]), str(record["integrity"]),
                         str(record["source"]), int(record["files"]), int(record["bytes"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ViewerInstallError(f"the installed viewer's record {root / RECORD} is "
                                 f"unreadable ({exc}); run pacsmesh viewer install") from None


def _member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """Where a tarball member goes under dist/ (None: outside package/dist/, skipped)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise ViewerInstallError(f"the tarball names a path outside itself: {member.name!r}")
    if not (member.name + ("/" if member.isdir() else "")).startswith(_KEEP):
        return None
    if not (member.isfile() or member.isdir()):
        raise ViewerInstallError(
            f"the tarball holds a link or device, not a plain file: {member.name!r}")
    return PurePosixPath(*name.parts[2:])


def _extract(tarball: Path, dist: Path) -> tuple[int, int]:
    files = size = 0
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                rel = _member_path(member)
                if rel is None or not rel.parts:
                    continue
                target = dist.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has a body
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                files, size = files + 1, size + member.size
                if target.suffix in _COMPRESS and member.size >= _COMPRESS_MIN:
                    with target.open("rb") as raw, \
                            gzip.open(target.with_name(target.name + ".gz"), "wb", 6) as gz:
                        shutil.copyfileobj(raw, gz, 1 << 20)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ViewerInstallError(f"cannot read the viewer tarball {tarball}: {exc}") from None
    if not (dist / "index.html").is_file():
        raise ViewerInstallError(f"{tarball} holds no package/dist/index.html: not a built "
                                 "OHIF Viewer")
    return files, size


def install(data_dir: Path, tarball: Path, source: str, *, version: str = VERSION,
            integrity: str = INTEGRITY) -> Installed:
    """Check ``tarball`` against ``integrity``, then make its ``package/dist/`` the viewer
    ``data_dir`` serves. On any refusal nothing installed before is touched."""
    found = integrity_of(tarball)
    if found != integrity:
        raise ViewerInstallError(
            f"{tarball} is not {PACKAGE}@{version} as published: its integrity is {found}, "
            f"expected {integrity}")
    viewers = data_dir / VIEWER_DIR
    viewers.mkdir(parents=True, exist_ok=True)
    tmp = viewers / f".tmp-{secrets.token_hex(6)}"
    try:
        tmp.mkdir()
        files, size = _extract(tarball, tmp / DIST)
        shutil.copyfile(tarball, tmp / ARCHIVE)
        record = {"package": PACKAGE, "version": version, "integrity": integrity,
                  "source": source, "files": files, "bytes": size,
                  "installed_at": time.time()}
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        final = viewers / f"ohif-{version}-{secrets.token_hex(4)}"
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    link = viewers / f".{CURRENT}-{secrets.token_hex(4)}"
    os.symlink(final.name, link)
    os.replace(link, viewers / CURRENT)
    for old in viewers.iterdir():  # earlier installs, and temp dirs a crash left behind
        if old.name != final.name and old.name.startswith(("ohif-", ".tmp-")) \
                and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    result = installed(data_dir)
    assert result is not None
    return result
