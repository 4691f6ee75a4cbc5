"""Loading the at-rest key: created once, checked at every start, never guessed wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.at_rest import seal, unseal
from node.at_rest_keys import KEY_FILE, KEYS_DIR, PARAMS_FILE, AtRestKeyError, load_key


def test_no_key_unless_asked(tmp_path: Path) -> None:
    assert load_key(tmp_path, False, None) is None
    assert not (tmp_path / KEYS_DIR).exists()


def test_key_file_created_private_and_reloaded(tmp_path: Path) -> None:
    key = load_key(tmp_path, True, None)
    assert key is not None
    keys = tmp_path / KEYS_DIR
    assert (keys.stat().st_mode & 0o777) == 0o700
    assert ((keys / KEY_FILE).stat().st_mode & 0o777) == 0o600
    sealed = seal(key, b"x" * 1000)
    again = load_key(tmp_path, True, None)
    assert again is not None and unseal(again, sealed) == b"x" * 1000
    # Encryption turned off later: the key still reads what was sealed.
    off = load_key(tmp_path, False, None)
    assert off is not None and unseal(off, sealed) == b"x" * 1000


def test_key_file_open_to_others_refused(tmp_path: Path) -> None:
    load_key(tmp_path, True, None)
    os.chmod(tmp_path / KEYS_DIR / KEY_FILE, 0o644)
    with pytest.raises(AtRestKeyError, match="readable by others"):
        load_key(tmp_path, True, None)


def test_replaced_key_file_refused(tmp_path: Path) -> None:
    load_key(tmp_path, True, None)
    key_path = tmp_path / KEYS_DIR / KEY_FILE
    key_path.write_bytes(os.urandom(32))
    with pytest.raises(AtRestKeyError, match="not this data dir's key"):
        load_key(tmp_path, True, None)


def test_passphrase_mode(tmp_path: Path) -> None:
    key = load_key(tmp_path, True, b"correct horse")
    assert key is not None
    assert not (tmp_path / KEYS_DIR / KEY_FILE).exists()
    assert b"correct horse" not in (tmp_path / KEYS_DIR / PARAMS_FILE).read_bytes()
    sealed = seal(key, b"data")
    again = load_key(tmp_path, True, b"correct horse")
    assert again is not None and unseal(again, sealed) == b"data"
    with pytest.raises(AtRestKeyError, match="wrong at-rest passphrase"):
        load_key(tmp_path, True, b"wrong")
    with pytest.raises(AtRestKeyError, match="give it"):
        load_key(tmp_path, True, None)


def test_passphrase_for_a_key_file_dir_refused(tmp_path: Path) -> None:
    load_key(tmp_path, True, None)
    with pytest.raises(AtRestKeyError, match="passphrase was given"):
        load_key(tmp_path, True, b"anything")


def test_messages_are_one_line(tmp_path: Path) -> None:
    load_key(tmp_path, True, b"p")
    with pytest.raises(AtRestKeyError) as info:
        load_key(tmp_path, True, b"q")
    assert "\n" not in str(info.value)
