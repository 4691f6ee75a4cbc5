"""This node's membership on disk: the roster, and the admin key on the admin's node.

``<data dir>/mesh/roster.json`` is read and written under a lock file, so the CLI
(``pacsmesh mesh ...``) and a running node can both change it; the node re-reads it when
it changes. Blocking file I/O, small files.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.errors import LocalDiscoveryError
from discovery.invite import make_invite
from discovery.roster import Roster, RosterError
from node.atomic_file import atomic_write
from node.identity import NodeIdentity

MESH_DIR = "mesh"
ROSTER_FILE = "roster.json"
ADMIN_KEY_FILE = "admin.key"
LOCK_FILE = "roster.lock"


class MembershipError(LocalDiscoveryError, RuntimeError):
    """A mesh command cannot be carried out here; the message says why, in one line."""


class MembershipStore:
    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / MESH_DIR
        self.roster_path = self.directory / ROSTER_FILE
        self.admin_key_path = self.directory / ADMIN_KEY_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.directory / LOCK_FILE).open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def mtime(self) -> float:
        try:
            return self.roster_path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def load(self) -> Roster | None:
        try:
            data = json.loads(self.roster_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise MembershipError(f"cannot read {self.roster_path}: {exc}") from None
        try:
            return Roster.from_json(data)
        except RosterError as exc:
            raise MembershipError(f"{self.roster_path}: {exc}") from None

    def _write(self, roster: Roster) -> None:
        # The roster says who may join and who was revoked: a torn one after a crash
        # would leave the node outside its own mesh.
        atomic_write(self.roster_path, json.dumps(roster.to_json(), indent=1).encode())

    def update(self, change: Callable[[Roster | None], Roster]) -> Roster:
        """Read, change and write the roster as one step against concurrent writers."""
        with self._locked():
            roster = change(self.load())
            self._write(roster)
            return roster

    def merge(self, roster: Roster) -> Roster:
        """Union our in-memory roster with the file's (the CLI may have added entries)."""
        def change(on_disk: Roster | None) -> Roster:
            if on_disk is None:
                return roster
            if (on_disk.mesh_id, on_disk.admin_key) != (roster.mesh_id, roster.admin_key):
                raise MembershipError("the roster on disk belongs to another mesh")
            on_disk.merge(roster.entries)
            return on_disk
        return self.update(change)

    def admin_key(self) -> Ed25519PrivateKey | None:
        try:
            key = serialization.load_pem_private_key(self.admin_key_path.read_bytes(), None)
        except FileNotFoundError:
            return None
        if not isinstance(key, Ed25519PrivateKey):
            raise MembershipError(f"{self.admin_key_path} is not a mesh admin key")
        return key

    def _save_admin_key(self, key: Ed25519PrivateKey) -> None:
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        fd = os.open(self.admin_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def init_mesh(store: MembershipStore, identity: NodeIdentity, aet: str) -> Roster:
    """Make this node the first member of a new mesh, holding its admin key."""
    if store.roster_path.exists():
        raise MembershipError(f"this node is already in a mesh ({store.roster_path})")
    admin = Ed25519PrivateKey.generate()
    mesh_id = secrets.token_hex(8)
    roster = Roster.create(mesh_id, admin, identity.cert_pem.decode(), aet, time.time())
    with store._locked():
        store._save_admin_key(admin)
        store._write(roster)
    return roster


def admin_credentials(store: MembershipStore) -> tuple[Ed25519PrivateKey, Roster]:
    roster = store.load()
    if roster is None:
        raise MembershipError("this node is in no mesh (run: pacsmesh mesh init)")
    admin = store.admin_key()
    if admin is None:
        raise MembershipError("this node does not hold the mesh admin key")
    return admin, roster


def create_invite(
    store: MembershipStore, valid_seconds: float, uses: int, seeds: tuple[str, ...] = (),
    pins: tuple[str, ...] = (),
) -> str:
    admin, roster = admin_credentials(store)
    return make_invite(admin, roster.mesh_id, time.time() + valid_seconds, uses, seeds, pins)


def revoke(store: MembershipStore, node_id: str) -> Roster:
    admin, _ = admin_credentials(store)

    def change(roster: Roster | None) -> Roster:
        assert roster is not None
        roster.revoke(admin, node_id, time.time())
        return roster

    return store.update(change)
