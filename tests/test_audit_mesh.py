"""The audit trail across a mesh: joins (admitted and refused) and tombstone deletions
are recorded, and a member's AE title may retrieve without being configured."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.mesh_support import cli, invite, joiner, mesh_view, wait_for
from tests.support import NodeProcess, dcmtk
from tests.test_audit import audit_rows, wait_for_rows

STUDY = str(dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
            .StudyInstanceUID)


def test_joins_deletions_and_member_retrieves_are_audited(
    make_node, founder: NodeProcess, tmp_path: Path
) -> None:
    token = invite(founder, "--uses", "1")
    b = joiner(make_node, founder, "nodeb", token).start()
    wait_for(lambda: mesh_view(b)["member"])
    joined = wait_for_rows(founder, bool, "--action", "join")
    assert [(r["calling_aet"], r["node_id"], r["outcome"]) for r in joined] == [
        ("NODEB", mesh_view(b)["node_id"], "success")]

    c = joiner(make_node, founder, "nodec", token).start()
    wait_for(lambda: "invite has no uses left" in founder.log())
    refused = wait_for_rows(founder, lambda r: any("mesh join" in x["detail"] for x in r),
                            "--action", "refusal")
    assert any("no uses left" in r["detail"] and r["address"] == "127.0.0.1" for r in refused)
    c.stop()

    # NODEB is in no modality table and no allowed_aets: the roster makes it known.
    (tmp_path / "got").mkdir()
    got = dcmtk("getscu", "-S", "-aet", "NODEB", "-aec", founder.aet, "-od",
                str(tmp_path / "got"), "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={STUDY}", *founder.address)
    assert len(list((tmp_path / "got").iterdir())) == 1, got.stderr

    deleted = cli("delete", "--data-dir", str(founder.data_dir), "--study", STUDY, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    for node in (founder, b):
        rows = wait_for_rows(node, bool, "--action", "deletion", "--study", STUDY)
        assert rows and rows[0]["node_id"] == mesh_view(founder)["node_id"], node.aet
    assert audit_rows(founder, "--study", STUDY, "--action", "retrieve")[0]["calling_aet"] \
        == "NODEB"
