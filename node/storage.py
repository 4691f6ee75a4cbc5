"""Content-addressed file store: Part 10 bytes kept exactly as received.

Each object lives at ``objects/<sha[:2]>/<sha>.dcm``. Writes go to ``tmp/``, are fsynced,
then renamed into place and the directory fsynced, so a crash leaves either the whole
file or only a temporary file, which :meth:`Storage.prepare` removes at start-up.
Replication's resumable transfers keep ``partial/<sha>.part`` files, which are never
objects: they are kept across restarts, and removed once complete, moot or stale.
Blocking I/O: call from worker threads, never from the event loop.

With an at-rest key (``node/at_rest.py``), new objects are written sealed, still named by
the SHA-256 of their plaintext; objects stored before stay as they are, and both kinds
read the same way: nothing outside this module opens an object file itself, and every
reader sees plaintext (:meth:`Storage.open_object`, :meth:`Storage.read`,
:meth:`Storage.plain_file`). Without a key, nothing is peeked at or copied.

``pending/`` is the crash journal start-up reads instead of the whole archive
(node/reconcile.py says why each record is enough): ``<sha>.placed``, an object about to
be renamed into place whose index row may not be durable yet, and ``<uuid>.removed`` or
``<uuid>.quarantined``, the objects of a removal whose files may outlive their rows.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from node.at_rest import (
    HEADER_LEN,
    ObjectKey,
    SealedReader,
    Sealer,
    is_sealed,
    part_plaintext,
    seal,
)
from node.atomic_file import fsync_dir

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# A partial transfer nobody resumed for this long is given up: its sender has long since
# found another way (or the instance is gone), and the space is worth more.
PARTIAL_MAX_AGE = 24 * 3600.0


class StorageError(OSError):
    """Writing (or reading) an object failed; nothing was stored."""


class StorageFull(StorageError):
    """No space left (or over quota) on the data dir's file system."""


class TamperedObject(StorageError):
    """A sealed object fails authentication (damaged, truncated, not sealed with this
    data dir's key): its plaintext cannot be trusted, and nothing of it is returned."""

    def __init__(self, sha256: str, reason: str) -> None:
        super().__init__(errno.EIO, f"object {sha256[:12]} is damaged: {reason}")
        self.sha256 = sha256


# Sealed objects handed to pynetdicom or pydicom, which open files by path, are
# unsealed into anonymous memory (Linux memfd): plaintext never touches the disk.
_COPY = 2**20


@dataclass
class PlainFile:
    """A path at which an object's plaintext can be opened: the stored file itself, or,
    for a sealed object, an in-memory copy that lives until :meth:`close`."""

    path: Path
    holder: BinaryIO | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.holder is not None:
            self.holder.close()
            self.holder = None


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def storage_error(exc: OSError) -> StorageError:
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(exc.errno, f"data dir is full: {exc.strerror}")
    return StorageError(exc.errno, f"cannot write object: {exc}")


class Storage:
    def __init__(self, root: Path, key: ObjectKey | None = None, seal_new: bool = False) -> None:
        """``key`` reads sealed objects; with ``seal_new`` it also seals what is written."""
        if seal_new and key is None:
            raise ValueError("sealing new objects needs a key")
        self.root = root
        self.key = key
        self.seal_new = seal_new
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.conflicts = root / "conflicts"
        self.quarantine = root / "quarantine"
        # Incoming replication transfers that may resume: ``<sha256>.part``, never indexed.
        self.partial = root / "partial"
        self.pending = root / "pending"
        # Objects being ingested right now: their intents are not retired under them.
        self._placing: Counter[str] = Counter()
        # Intended since placed_intents() last listed them: not retired on that listing.
        self._since_listing: set[str] = set()
        self._placing_lock = threading.Lock()

    def prepare(self) -> int:
        """Create the layout and delete temporaries left by a crash; return how many."""
        for d in (self.objects, self.tmp, self.conflicts, self.quarantine, self.partial,
                  self.pending):
            d.mkdir(parents=True, exist_ok=True)
        # All 256 shard folders up front: a store then never pays for mkdir + fsync.
        missing = [d for d in (self.objects / f"{i:02x}" for i in range(256)) if not d.is_dir()]
        for shard in missing:
            shard.mkdir()
        if missing:
            fsync_dir(self.objects)
        removed = 0
        for entry in os.scandir(self.tmp):
            os.unlink(entry.path)
            removed += 1
        # Partial transfers survive restarts (that is their point) unless stale or moot.
        return removed + self.sweep_partials()

    # --- the crash journal (pending/) --------------------------------------------------

    def intend(self, sha256: str) -> None:
        """Record, durably, that object ``sha256`` is about to be placed: from now until
        its index row is known durable (:meth:`retire`), a crash leaves it findable.
        Call before :meth:`place`, and :meth:`settled` once the ingest is over."""
        with self._placing_lock:
            self._placing[sha256] += 1
            self._since_listing.add(sha256)
            try:
                os.close(os.open(self.pending / f"{sha256}.placed",
                                 os.O_WRONLY | os.O_CREAT, 0o640))
            except OSError as exc:
                self._release(sha256)
                raise storage_error(exc) from exc
        try:
            # The one fsync this costs runs while the temporary file's own fdatasync does
            # (Archive.ingest): the name is durable before the rename can be.
            fsync_dir(self.pending)
        except OSError as exc:
            self.settled(sha256)
            raise storage_error(exc) from exc

    def settled(self, sha256: str) -> None:
        """The ingest of ``sha256`` is over (stored, refused or failed): its intent may
        be retired once its outcome is durable."""
        with self._placing_lock:
            self._release(sha256)

    def _release(self, sha256: str) -> None:
        self._placing[sha256] -= 1
        if self._placing[sha256] <= 0:
            del self._placing[sha256]

    def placed_intents(self) -> list[str]:
        """The objects with an intent whose ingest is not running now."""
        with self._placing_lock:
            busy = set(self._placing)
            self._since_listing = set()
        return [e.name[:-7] for e in os.scandir(self.pending)
                if e.name.endswith(".placed") and e.name[:-7] not in busy]

    def retire(self, sha256s: Iterable[str]) -> None:
        """Drop the intents of objects whose outcome is durable. No fsync: an intent
        that comes back after a power loss is checked again at start-up, cheaply."""
        for sha in sha256s:
            with self._placing_lock:
                if sha in self._placing or sha in self._since_listing:
                    continue  # placed again meanwhile: that ingest's intent stays
                (self.pending / f"{sha}.placed").unlink(missing_ok=True)

    def intend_removal(self, kind: str, objects: Iterable[str],
                       conflict_copies: Iterable[str] = ()) -> Path | None:
        """Record, durably, objects (and conflict copies) whose rows are being dropped
        and whose files are to go (``removed``) or to quarantine (``quarantined``), so
        that a crash in between leaves neither a file nobody indexes nor a row without
        its file. Returns the record, for :meth:`removal_done`; None if nothing to do."""
        lines = [f"o {sha}" for sha in objects] + [f"c {sha}" for sha in conflict_copies]
        if not lines:
            return None
        record = self.pending / f"{uuid.uuid4().hex}.{kind}"
        try:
            fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, ("\n".join(lines) + "\n").encode())
                os.fdatasync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.pending)  # removals are rare: this fsync is theirs alone
        except OSError as exc:
            record.unlink(missing_ok=True)
            raise storage_error(exc) from exc
        return record

    def removal_done(self, record: Path | None) -> None:
        if record is not None:
            record.unlink(missing_ok=True)

    def removal_records(self) -> list[tuple[Path, str, list[str], list[str]]]:
        """(record, kind, objects, conflict copies) of each removal left by a crash."""
        found = []
        for entry in os.scandir(self.pending):
            kind = entry.name.rpartition(".")[2]
            if kind not in ("removed", "quarantined"):
                continue
            words = [line.split() for line in Path(entry.path).read_text().splitlines()]
            # A record cut short by a crash lost only names it had not yet promised.
            whole = [w for w in words if len(w) == 2 and len(w[1]) == 64]
            found.append((Path(entry.path), kind, [w[1] for w in whole if w[0] == "o"],
                          [w[1] for w in whole if w[0] == "c"]))
        return found

    def partial_path(self, sha256: str) -> Path:
        return self.partial / f"{sha256}.part"

    def partial_held(self, sha256: str) -> int:
        """Plaintext bytes a resumed transfer of ``sha256`` may keep: all of a plain part,
        the complete chunks of a sealed one; 0 for a part in the other format."""
        try:
            with self.partial_path(sha256).open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if self.key is None:
                    return size
                head = fh.read(HEADER_LEN)
        except FileNotFoundError:
            return 0
        if not self.seal_new:
            return 0 if is_sealed(head) else size
        return part_plaintext(head, size) if is_sealed(head) else 0

    def sweep_partials(self, max_age: float = PARTIAL_MAX_AGE) -> int:
        """Delete partial transfers that are stale, or whose object is stored already."""
        removed = 0
        cutoff = time.time() - max_age
        for entry in os.scandir(self.partial):
            sha = entry.name.removesuffix(".part")
            try:
                if entry.stat().st_mtime < cutoff or self.exists(sha):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # finished (renamed into place) while we looked
        return removed

    def path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / f"{sha256}.dcm"

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def write(self, data: bytes | memoryview, sha256: str, into: Path | None = None) -> Path:
        """Durably write ``data`` (whose hash is ``sha256``); return its final path.

        Writing bytes that are already stored is harmless: the rename replaces the
        file with identical content.
        """
        return self.commit(self.write_temp(data), sha256, into)

    def write_temp(self, data: bytes | memoryview) -> Path:
        """Write ``data`` (plaintext) to a durable temporary file, sealed if new objects
        are, before its hash need be known."""
        if self.seal_new:
            assert self.key is not None
            data = seal(self.key, data)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fdatasync(fd)  # the data and its size; other metadata need not be durable
            finally:
                os.close(fd)
        except OSError as exc:
            self.discard(tmp)
            raise storage_error(exc) from exc
        return tmp

    def commit(self, tmp: Path, sha256: str, into: Path | None = None) -> Path:
        """Move a durable temporary file to its place, durably."""
        final = self.place(tmp, sha256, into)
        self.sync_place(final)
        return final

    def place(self, tmp: Path, sha256: str, into: Path | None = None) -> Path:
        """Rename a durable temporary file to its place; durable once :meth:`sync_place`
        returns. Split so that the caller can overlap that wait with other work."""
        final = (into / f"{sha256}.dcm") if into is not None else self.path(sha256)
        try:
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                # Shards exist from prepare(); only conflicts/ or a removed shard get here,
                # so the hot path pays no extra stat for the folder.
                if final.parent.is_dir():
                    raise
                final.parent.mkdir(parents=True, exist_ok=True)
                fsync_dir(final.parent.parent)
                os.replace(tmp, final)
        except OSError as exc:
            self.discard(tmp)
            raise storage_error(exc) from exc
        return final

    def sync_place(self, final: Path) -> None:
        """Make the rename that put ``final`` in place survive a power loss."""
        try:
            fsync_dir(final.parent)
        except OSError as exc:
            raise storage_error(exc) from exc

    def discard(self, tmp: Path) -> None:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the temp dir is cleaned at next start-up anyway

    def read(self, sha256: str) -> bytes:
        """The object's plaintext; raises TamperedObject, or OSError if unreadable."""
        if self.key is None:
            return self.path(sha256).read_bytes()
        with self.open_object(sha256) as fh:
            return fh.read()

    def open_object(self, sha256: str) -> BinaryIO:
        """The object's plaintext as a seekable file; reads raise TamperedObject where
        a sealed object fails authentication."""
        return self.open_file(self.path(sha256), sha256)

    def open_file(self, path: Path, sha256: str) -> BinaryIO:
        """:meth:`open_object` for an object file elsewhere (a temporary file, a part
        of a transfer, a conflicting copy) whose plaintext is named ``sha256``."""
        fh = path.open("rb")
        if self.key is None:
            return fh
        try:
            head = fh.read(HEADER_LEN)
            if not is_sealed(head):
                fh.seek(0)
                return fh
            # A RawIOBase, which typeshed does not count as a BinaryIO; it has every
            # method the callers use (read, seek, tell, close, context manager).
            return cast(BinaryIO, SealedReader(self.key, fh, os.fstat(fh.fileno()).st_size,
                                               error=functools.partial(TamperedObject,
                                                                       sha256)))
        except BaseException:
            fh.close()
            raise

    def plain_file(self, sha256: str) -> PlainFile:
        """A path for libraries that open files themselves. A plaintext object is its
        own file (no read, no copy); a sealed one is unsealed whole into memory first,
        so a damaged one raises TamperedObject here, before anything is sent."""
        path = self.path(sha256)
        if self.key is None:
            return PlainFile(path)
        with self.open_object(sha256) as fh:
            if not isinstance(fh, SealedReader):
                return PlainFile(path)
            holder = os.fdopen(os.memfd_create(f"pacsmesh-{sha256[:12]}", os.MFD_CLOEXEC),
                               "w+b")
            try:
                while block := fh.read(_COPY):
                    holder.write(block)
                holder.flush()
            except BaseException:
                holder.close()
                raise
        return PlainFile(Path(f"/proc/self/fd/{holder.fileno()}"), holder)

    def reseal(self, sha256: str) -> bool:
        """Seal a plaintext object stored before encryption was turned on, streaming
        (objects may be larger than memory); False if there was nothing to do, or if
        its bytes no longer match its name (scrub's next pass sets it aside)."""
        if not self.seal_new:
            return False
        assert self.key is not None
        header = self.key.new_header()
        sealer = Sealer(self.key.file_cipher(header))
        digest = hashlib.sha256()
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        with self.path(sha256).open("rb") as src:
            if is_sealed(src.read(HEADER_LEN)):
                return False
            src.seek(0)
            self._seal_copy(src, tmp, header, sealer, digest)
        if digest.hexdigest() != sha256:
            self.discard(tmp)
            return False
        self.commit(tmp, sha256)
        return True

    def _seal_copy(self, src: BinaryIO, tmp: Path, header: bytes, sealer: Sealer,
                   digest: hashlib._Hash) -> None:
        try:
            with open(tmp, "xb") as dst:
                os.fchmod(dst.fileno(), 0o640)
                dst.write(header)
                while block := src.read(_COPY):
                    digest.update(block)
                    dst.write(sealer.update(block))
                dst.write(sealer.finish())
                dst.flush()
                os.fdatasync(dst.fileno())
        except OSError as exc:
            self.discard(tmp)
            raise storage_error(exc) from exc

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def purge(self, objects: tuple[str, ...], conflict_copies: tuple[str, ...]) -> None:
        """Remove deleted objects wherever they are kept: stored, quarantined, aside."""
        for sha in objects:
            self.remove(sha)
            (self.quarantine / f"{sha}.dcm").unlink(missing_ok=True)
        for sha in conflict_copies:
            (self.conflicts / f"{sha}.dcm").unlink(missing_ok=True)

    def move_to_quarantine(self, path: Path) -> Path:
        target = self.quarantine / path.name
        os.replace(path, target)
        return target

    def iter_objects(self) -> Iterator[tuple[str, Path]]:
        """Yield ``(sha256, path)`` of every stored object."""
        if not self.objects.is_dir():
            return
        for shard in os.scandir(self.objects):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                name = entry.name
                if name.endswith(".dcm") and len(name) == 68:
                    yield name[:-4], Path(entry.path)
