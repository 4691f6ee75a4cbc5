"""An HTTP upload replicates whole (issue 21, defect 1): the fragment the old handler
stored was copied to the peer, whose copy hashed to its own name and so looked healthy.
Now the peer receives exactly the bytes that were uploaded."""

from __future__ import annotations

import hashlib

from tests.mesh_support import invite, joiner, mesh_view, peer_states, start_founder, wait_for
from tests.support import data_store_dir
from tests.test_http_upload import curl_upload, state, stored_object


def test_uploaded_instance_reaches_the_peer_byte_identical(make_node) -> None:
    a = start_founder(make_node, extra_args=("--http-auth", "none"))
    b = joiner(make_node, a, "nodeb", invite(a)).start()
    wait_for(lambda: all(len(mesh_view(n)["members"]) == 2 for n in (a, b)), 30)
    wait_for(lambda: peer_states(a) and all(s == "alive" for s in peer_states(a).values()),
             30)
    path = data_store_dir() / "RG1_UNCI.dcm"  # 7 MB
    sent = path.read_bytes()
    sha = hashlib.sha256(sent).hexdigest()

    code, body = curl_upload(a, path)
    assert code == 200, body
    assert stored_object(a, sha) == sent
    # Two members, two replicas: the peer owns a copy of everything the founder holds
    # (the upload, and the founder's first instance).
    # A file is in place a moment before its index row commits: wait for both.
    wait_for(lambda: state(b)["objects"] == state(a)["objects"]
             and b.status()["instances"] == 2, 60)
    wait_for(lambda: a.status()["outbox_depth"] == 0, 30)
    assert stored_object(b, sha) == sent
    for node in (a, b):
        after = state(node)
        assert len(after["objects"]) == after["instances"] == 2  # type: ignore[arg-type]
        assert (after["tmp"], after["partial"], after["conflicts"]) == ([], [], [])
