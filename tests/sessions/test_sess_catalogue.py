# SPDX-License-Identifier: Apache-2.0
"""The service catalogue and the PII-free record helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import DEFAULT_SIM_CONFIG, load_config, parse_config
from agent.errors import ConfigError
from agent.sessions.catalogue import Catalogue, UnknownService, load_default_services
from agent.sessions.sessionio import mask_id, s10_waybill
from hal.sim.idcard import synthetic_number


def test_default_catalogue_is_used_without_services_and_is_realistic() -> None:
    cat = Catalogue.from_config(load_config(DEFAULT_SIM_CONFIG))
    assert cat.default and set(cat.ids()) == {"driving_licence_renewal", "pension_record_print",
                                             "utility_bill_payment", "residence_permit_application"}
    licence = cat.get("driving_licence_renewal")
    assert licence.mail_document and licence.face_legal_basis and not licence.offline
    assert cat.get("pension_record_print").offline
    assert Catalogue.needs(cat.get("utility_bill_payment"), "scan_payment")
    permit = cat.get("residence_permit_application")
    assert permit.mail_document and permit.face_legal_basis is None      # photo only with consent
    assert all(s.name_zh and s.name_en for s in cat)
    with pytest.raises(UnknownService):
        cat.get("nope")


def test_configured_services_replace_the_default() -> None:
    raw = load_config(DEFAULT_SIM_CONFIG).raw
    cfg = parse_config({**raw, "services": [{"id": "only", "name_zh": "唯一", "name_en": "Only",
                                             "steps": [{"kind": "confirm", "timeout_s": 5}]}]})
    cat = Catalogue.from_config(cfg)
    assert cat.ids() == ["only"] and not cat.default
    with pytest.raises(ConfigError, match=r"services\[0\].steps\[0\].kind"):
        parse_config({**raw, "services": [{"id": "x", "name_zh": "x", "name_en": "x",
                                           "steps": [{"kind": "dance", "timeout_s": 5}]}]})
    assert len(load_default_services()) == 4


@given(st.from_regex(r"99[0-9]{15}", fullmatch=True))
def test_mask_shows_at_most_first_two_and_last_four(body: str) -> None:
    number = synthetic_number(body)
    masked = mask_id(number)
    assert masked is not None and len(masked) == len(number)
    visible = [c for c in masked if c != "*"]
    assert len(visible) <= 6 and masked[:2] == number[:2] and masked[-4:] == number[-4:]
    assert masked[2:-4] == "*" * (len(number) - 6)


def test_short_values_are_fully_masked_and_waybills_carry_s10_check_digits() -> None:
    assert mask_id("12345678") == "********" and mask_id(None) is None
    assert s10_waybill(47312482) == "EA473124829CN"
    for n in range(1, 200):
        w = s10_waybill(n)
        assert len(w) == 13 and w.startswith("EA") and w.endswith("CN")
