"""File ids on media (PS3.10 8.2): the rules import checks before reading anything."""

from __future__ import annotations

import pytest

from node.media.fileids import BadFileId, check_file_id


def test_valid_ids_come_back_upper_cased() -> None:
    assert check_file_id(["PT000000", "ST000000", "SE000000", "IM000000"]) == (
        "PT000000", "ST000000", "SE000000", "IM000000")
    assert check_file_id(["dicom", "im_00001"]) == ("DICOM", "IM_00001")
    assert check_file_id("IMAGE1") == ("IMAGE1",)
    assert len(check_file_id(["A"] * 8)) == 8


@pytest.mark.parametrize("file_id", [
    ["..", "ETC"], ["DICOM", "."], ["/ETC"], ["IM.DCM"], ["IM-0001"], ["TOOLONGNAME"],
    ["DICOM", ""], [], ["A"] * 9, ["IM 0001"], ["ÄRZTE"],
])
def test_ids_outside_the_rules_are_refused(file_id: list[str]) -> None:
    with pytest.raises(BadFileId):
        check_file_id(file_id)
