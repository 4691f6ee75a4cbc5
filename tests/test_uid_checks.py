"""pynetdicom's UID checks, memoized: same answers, bad values still refused every time."""

from __future__ import annotations

import pytest
from pydicom.uid import UID
from pynetdicom import pdu_items
from pynetdicom.pdu_items import TransferSyntaxSubItem

from node.dicom.patches import memoize_uid_checks


def test_memoized_uid_checks_answer_as_before_and_still_refuse_bad_values() -> None:
    memoize_uid_checks()
    memoize_uid_checks()  # idempotent: one cache, not a cache of a cache
    assert getattr(pdu_items.set_uid, "memoized", False)
    assert pdu_items.set_uid.__wrapped__.__name__ == "set_uid"  # type: ignore[attr-defined]

    item = TransferSyntaxSubItem()
    item.transfer_syntax_name = b"1.2.840.10008.1.2.1"
    assert item.transfer_syntax_name == "1.2.840.10008.1.2.1"
    assert item.transfer_syntax_name.is_valid
    assert not UID("1.02.3").is_valid and not UID("1.2." + "3" * 70).is_valid
    assert UID("1.2.840.10008.1.2.4.50").is_valid
    for _ in range(2):  # a failure is not cached as an answer
        with pytest.raises(ValueError, match="Transfer Syntax Name"):
            item.transfer_syntax_name = "1.2.840.10008.1.2.1" + ".1" * 40  # > 64 chars
