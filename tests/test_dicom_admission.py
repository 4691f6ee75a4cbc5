"""The DICOM port's admission decisions and AE-title claims, without sockets."""

from __future__ import annotations

import pytest

from node.dicom.admission import Admission, AdmissionLimits, Pool, RefusalThrottle, Refused, Slot
from node.dicom.claims import KnownPeers, MemberIdentity


def _slot(decision: Slot | Refused) -> Slot:
    assert isinstance(decision, Slot), decision
    return decision


def test_per_address_limit_counts_open_connections() -> None:
    admission = Admission(AdmissionLimits(total=32, per_address=2, reserved=4))
    first = _slot(admission.connect("10.0.0.9", False))
    _slot(admission.connect("10.0.0.9", False))
    assert isinstance(admission.connect("10.0.0.9", False), Refused)
    _slot(admission.connect("10.0.0.10", False))  # another address is not affected
    admission.release(first)
    admission.release(first)  # twice: counted once
    _slot(admission.connect("10.0.0.9", False))
    assert isinstance(admission.connect("10.0.0.9", False), Refused)


def test_the_reserve_is_only_for_known_addresses_and_known_aes() -> None:
    admission = Admission(AdmissionLimits(total=4, per_address=10, reserved=2))
    flood = [_slot(admission.connect("10.0.0.66", False)) for _ in range(2)]
    assert all(s.pool is Pool.GENERAL for s in flood)
    assert isinstance(admission.connect("10.0.0.66", False), Refused)
    stranger = _slot(admission.connect("10.0.0.5", True))
    assert stranger.pool is Pool.RESERVE
    assert isinstance(admission.requested(stranger, known=False), Refused)
    admission.release(stranger)
    modality = _slot(admission.connect("10.0.0.5", True))
    assert admission.requested(modality, known=True) is None
    _slot(admission.connect("10.0.0.5", True))
    assert isinstance(admission.connect("10.0.0.5", True), Refused)  # reserve full too
    admission.release(flood[0])
    _slot(admission.connect("10.0.0.66", False))
    assert admission.in_use() == {"general": 2, "reserve": 2}


def test_a_known_ae_in_a_general_slot_moves_to_the_reserve() -> None:
    admission = Admission(AdmissionLimits(total=3, per_address=10, reserved=1))
    known = _slot(admission.connect("10.0.0.5", True))
    assert known.pool is Pool.GENERAL
    assert admission.requested(known, known=True) is None
    assert known.pool is Pool.RESERVE
    # Its general slot went back to everyone.
    assert _slot(admission.connect("10.0.0.66", False)).pool is Pool.GENERAL
    assert _slot(admission.connect("10.0.0.66", False)).pool is Pool.GENERAL
    admission.release(known)
    assert admission.in_use() == {"general": 2, "reserve": 0}


def test_inconsistent_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(total=4, per_address=1, reserved=4)


def test_refusals_are_reported_once_per_window_with_their_count() -> None:
    now = [0.0]
    throttle = RefusalThrottle(lambda: now[0], window=60)
    assert throttle.report("connection", "10.0.0.66") == 1
    assert all(throttle.report("connection", "10.0.0.66") is None for _ in range(500))
    assert throttle.report("connection", "10.0.0.67") == 1  # another address: its own row
    now[0] = 61
    assert throttle.report("connection", "10.0.0.66") == 501


def test_the_throttle_stays_bounded_under_a_scan() -> None:
    now = [0.0]
    throttle = RefusalThrottle(lambda: now[0], window=60, max_keys=10)
    for n in range(100):
        throttle.report("connection", f"10.0.{n}.1")
    assert len(throttle._since) <= 10


MEMBER_B = MemberIdentity("NODEB", "NODE-B-ID", frozenset({"192.168.1.20"}))


def _known() -> KnownPeers:
    return KnownPeers("NODEA", frozenset({"192.168.1.10"}), {"CT1": frozenset({"192.168.1.50"})},
                      lambda: [MEMBER_B])


def test_a_member_title_counts_only_from_the_member() -> None:
    known = _known()
    assert known.member_claim("NODEB", "192.168.1.20", None) is None
    assert known.member_claim("NODEB", "192.168.1.99", None) is not None
    # Over DICOM TLS with the member's certificate, from any address.
    assert known.member_claim("NODEB", "192.168.1.99", "NODE-B-ID") is None
    assert known.member_claim("NODEB", "192.168.1.99", "SOMEONE-ELSE") is not None
    # Titles that are no member's are not checked here.
    assert known.member_claim("VIEWER", "192.168.1.99", None) is None
    # This node's own title: only from this host.
    assert known.member_claim("NODEA", "127.0.0.1", None) is None
    assert known.member_claim("NODEA", "192.168.1.10", None) is None
    assert known.member_claim("NODEA", "127.0.0.2", None) is not None


def test_reserve_eligibility_and_consistency() -> None:
    known = _known()
    for address in ("192.168.1.50", "192.168.1.20", "127.0.0.1", "192.168.1.10"):
        assert known.eligible_address(address)
    assert not known.eligible_address("192.168.1.66")
    assert not known.eligible_address("127.0.0.2")
    assert known.consistent("CT1", "192.168.1.50", None)
    assert not known.consistent("CT1", "192.168.1.20", None)
    assert known.consistent("NODEB", "192.168.1.20", None)
    assert not known.consistent("STRANGER", "192.168.1.50", None)


def test_limits_are_configured_and_checked(tmp_path) -> None:
    from node.config import ConfigError, load_config

    env = {"PACSMESH_MAX_ASSOCIATIONS": "64", "PACSMESH_MAX_ASSOCIATIONS_PER_ADDRESS": "4",
           "PACSMESH_RESERVED_ASSOCIATIONS": "16", "PACSMESH_ACSE_TIMEOUT": "5",
           "PACSMESH_PDU_TIMEOUT": "2.5"}
    limits = load_config({"data_dir": str(tmp_path)}, env).dicom_limits
    assert (limits.max_associations, limits.max_associations_per_address,
            limits.reserved_associations, limits.acse_timeout, limits.pdu_timeout) == (
        64, 4, 16, 5.0, 2.5)
    for key, value, words in (("RESERVED_ASSOCIATIONS", "64", "must be less than"),
                              ("MAX_ASSOCIATIONS", "lots", "whole number"),
                              ("MAX_ASSOCIATIONS_PER_ADDRESS", "0", "whole number"),
                              ("PDU_TIMEOUT", "-1", "seconds")):
        with pytest.raises(ConfigError, match=words):
            load_config({"data_dir": str(tmp_path)}, {**env, f"PACSMESH_{key}": value})
