"""The at-rest master key: a key file in the data dir, or derived from a passphrase.

``keys/at-rest.json`` says which, and holds a key check value, so a wrong passphrase or a
wrong key file stops the node at start instead of making every object look tampered
(scrub would then quarantine the whole archive). Once a data dir has a key, the key is
loaded even when encryption is turned off again: objects sealed earlier stay readable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from node.at_rest import KEY_LEN, ObjectKey
from node.atomic_file import fsync_dir
from node.identity import write_private

KEYS_DIR = "keys"
KEY_FILE = "at-rest.key"
PARAMS_FILE = "at-rest.json"
# ~32 MiB and ~0.1 s per derivation: once per start, and costly for a guesser.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_CHECK_LABEL = b"pacsmesh at-rest key check"


class AtRestKeyError(ValueError):
    """The key cannot be had; the message is one line an admin can act on."""


def _check_value(key: bytes) -> str:
    return hmac.new(key, _CHECK_LABEL, hashlib.sha256).hexdigest()[:32]


def _private(path: Path, what: str) -> None:
    mode = path.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise AtRestKeyError(
            f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):o}): "
            f"chmod {'700' if path.is_dir() else '600'} it"
        )


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_LEN, n=n, r=r, p=p).derive(passphrase)


def load_key(data_dir: Path, encrypt: bool, passphrase: bytes | None) -> ObjectKey | None:
    """The data dir's key, created when ``encrypt`` is asked for the first time; None when
    the data dir has never had one and none is asked for. Raises AtRestKeyError."""
    keys = data_dir / KEYS_DIR
    params_path = keys / PARAMS_FILE
    try:
        if params_path.is_file():
            return _load(keys, params_path, passphrase)
        if not encrypt:
            if passphrase is not None:
                raise AtRestKeyError("an at-rest passphrase was given but encrypt_at_rest is off")
            return None
        return _create(keys, params_path, passphrase)
    except OSError as exc:
        raise AtRestKeyError(f"cannot use the at-rest key in {keys}: {exc.strerror}") from None


def _load(keys: Path, params_path: Path, passphrase: bytes | None) -> ObjectKey:
    _private(keys, "key folder")
    try:
        params = json.loads(params_path.read_text())
        kdf, check = params["kdf"], params["check"]
    except (ValueError, KeyError, TypeError):
        raise AtRestKeyError(f"{params_path} is damaged") from None
    if kdf == "scrypt":
        if passphrase is None:
            raise AtRestKeyError(
                "objects in this data dir are encrypted with a passphrase: give it in "
                "PACSMESH_AT_REST_PASSPHRASE or --at-rest-passphrase-file"
            )
        try:
            key = _scrypt(passphrase, bytes.fromhex(params["salt"]), int(params["n"]),
                          int(params["r"]), int(params["p"]))
        except (ValueError, KeyError, TypeError):
            raise AtRestKeyError(f"{params_path} is damaged") from None
        if not hmac.compare_digest(_check_value(key), check):
            raise AtRestKeyError("wrong at-rest passphrase")
        return ObjectKey(key)
    if kdf != "file":
        raise AtRestKeyError(f"{params_path}: unknown key kind {kdf!r}")
    if passphrase is not None:
        raise AtRestKeyError(
            f"an at-rest passphrase was given, but this data dir's key is {keys / KEY_FILE}"
        )
    key_path = keys / KEY_FILE
    if not key_path.is_file():
        raise AtRestKeyError(f"at-rest key file {key_path} is missing: restore it from backup")
    _private(key_path, "at-rest key file")
    key = key_path.read_bytes()
    if len(key) != KEY_LEN or not hmac.compare_digest(_check_value(key), check):
        raise AtRestKeyError(f"at-rest key file {key_path} is not this data dir's key")
    return ObjectKey(key)


def _create(keys: Path, params_path: Path, passphrase: bytes | None) -> ObjectKey:
    keys.mkdir(mode=0o700, exist_ok=True)
    _private(keys, "key folder")
    if passphrase is not None:
        salt = os.urandom(16)
        key = _scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        params = {"kdf": "scrypt", "salt": salt.hex(), "n": SCRYPT_N, "r": SCRYPT_R,
                  "p": SCRYPT_P, "check": _check_value(key)}
    else:
        key = os.urandom(KEY_LEN)
        key_path = keys / KEY_FILE
        if key_path.exists():
            raise AtRestKeyError(
                f"{key_path} exists without {params_path.name}: restore that file or "
                "move the key away"
            )
        write_private(key_path, key)
        params = {"kdf": "file", "check": _check_value(key)}
    # Written last: its presence means the key is complete.
    write_private(params_path, json.dumps(params).encode())
    # Objects sealed under a key whose file a power loss took away would be lost.
    fsync_dir(keys)
    return ObjectKey(key)
