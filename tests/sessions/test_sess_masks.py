# SPDX-License-Identifier: Apache-2.0
"""The masked forms the screen and the receipt show, and the receipt's two languages (pure helpers)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import KioskConfig
from agent.sessions.catalogue import load_default_services
from agent.sessions.sessionio import mask_name, receipt_lines


@pytest.mark.parametrize("name, masked", [
    ("张三明", "张*明"), ("欧阳娜娜", "欧**娜"), ("李四", "李*"), ("王", "王*"),
    ("阿依古丽·买买提", "阿******提"), ("SAMPLE, TEST PERSON", "S*** T*** P***"), ("", None), (None, None),
])
def test_name_masks(name: str | None, masked: str | None) -> None:
    assert mask_name(name) == masked


@given(st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=3, max_size=12))
def test_a_chinese_name_keeps_only_its_first_and_last_character(name: str) -> None:
    masked = mask_name(name)
    assert masked is not None and len(masked) == len(name)
    assert masked[0] == name[0] and masked[-1] == name[-1] and set(masked[1:-1]) == {"*"}


def _kiosk() -> Any:
    return KioskConfig(id="k-0001", fleet="test", site="Bench 1")


TX = {"id": "a" * 32, "receipt": "K-0001-20261130-000007", "id_masked": "11************1234",
      "payment": {"method": "alipay", "ref_masked": "28************3456"}, "waybill": "EA473124829CN"}


def test_the_receipt_speaks_the_session_language() -> None:
    service = next(s for s in load_default_services() if s.id == "driving_licence_renewal")
    zh = receipt_lines(_kiosk(), service, TX, language="zh", name_masked="张*明")
    en = receipt_lines(_kiosk(), service, TX, language="en", name_masked="S*** J***")
    assert zh[0] == service.name_zh and "回执号：K-0001-20261130-000007" in zh and "姓名：张*明" in zh
    assert "支付：支付宝 28************3456" in zh and "EMS 邮件号：EA473124829CN" in zh
    assert en[0] == service.name_en and "Receipt: K-0001-20261130-000007" in en and "Name: S*** J***" in en
    assert "Paid: Alipay 28************3456" in en and "EMS waybill: EA473124829CN" in en
    assert not any(re.search(r"[\u4e00-\u9fff]", line) for line in en)
    assert len(zh) == len(en)
