"""Encryption at rest across a mesh: replication carries plaintext between sealed stores,
and a tampered sealed replica is caught and repaired from the other holder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from node.at_rest import is_sealed
from node.at_rest_keys import load_key
from node.storage import Storage, TamperedObject
from tests.mesh_support import invite, joiner, peer_states, start_founder, wait_for
from tests.support import NodeProcess, one_file_per_instance, storescu

SEALED_ENV = {**os.environ, "PACSMESH_ENCRYPT_AT_REST": "true"}


def held(node: NodeProcess) -> dict[str, Path]:
    return {p.stem: p for p in (node.data_dir / "objects").rglob("*.dcm")}


def plaintext(node: NodeProcess, sha: str) -> bytes:
    return Storage(node.data_dir, load_key(node.data_dir, False, None)).read(sha)


def test_sealed_replicas_match_and_a_tampered_one_is_repaired(make_node) -> None:
    founder = start_founder(make_node, env=SEALED_ENV)
    token = invite(founder, "--uses", "1")
    b = joiner(make_node, founder, "nodeb", token, env=SEALED_ENV).start()
    wait_for(lambda: peer_states(founder).get("NODEB") == "alive", 30)
    assert storescu(founder, one_file_per_instance()[:3]) == []
    wait_for(lambda: held(b).keys() == held(founder).keys(), 60)

    for sha, path in held(b).items():
        other = held(founder)[sha]
        assert is_sealed(path.read_bytes()) and is_sealed(other.read_bytes())
        assert path.read_bytes() != other.read_bytes()  # each node its own key and salt
        assert plaintext(b, sha) == plaintext(founder, sha)
        assert hashlib.sha256(plaintext(b, sha)).hexdigest() == sha

    victim = sorted(held(b).values())[0]
    damaged = bytearray(victim.read_bytes())
    damaged[-100] ^= 0x01  # one bit in the last chunk
    victim.write_bytes(bytes(damaged))

    def repaired() -> bool:
        try:
            return (is_sealed(victim.read_bytes())
                    and hashlib.sha256(plaintext(b, victim.stem)).hexdigest() == victim.stem)
        except (FileNotFoundError, TamperedObject):  # not yet set aside, or not yet back
            return False

    wait_for(repaired, 90)
    assert (b.data_dir / "quarantine" / victim.name).exists()  # the damaged copy is kept
    assert f"object {victim.stem[:12]} is damaged" in b.log()
    assert held(founder).keys() == held(b).keys()


def test_plain_and_sealed_members_exchange_identical_plaintext(make_node) -> None:
    founder = start_founder(make_node)  # no encryption here
    token = invite(founder, "--uses", "1")
    b = joiner(make_node, founder, "nodeb", token, env=SEALED_ENV).start()
    wait_for(lambda: peer_states(founder).get("NODEB") == "alive", 30)
    assert storescu(b, one_file_per_instance()[3:6]) == []
    wait_for(lambda: held(b).keys() == held(founder).keys(), 60)
    for sha, path in held(founder).items():
        assert path.read_bytes()[128:132] == b"DICM"
        assert is_sealed(held(b)[sha].read_bytes())
        assert path.read_bytes() == plaintext(b, sha)
