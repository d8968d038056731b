"""Number shield: masked display forms, salted link hash, no full value anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.shield import ShieldError, mask_id, mask_name, mask_number, redact, shield

SALT = b"s" * 32


def test_masked_forms_match_the_agreed_display():
    assert mask_number("13812345678") == "138****5678"
    assert mask_number("+86 138-1234-5678") == "861******5678"
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳娜娜") == "欧***"
    assert mask_id("110101199003071234") == "110***********1234"


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_masked_mobile_never_reveals_the_middle_four_digits(number):
    masked = shield({"number": number}, SALT).masked["number"]
    assert masked[3:7] == "****"
    assert number not in masked
    assert masked[:3] == number[:3] and masked[-4:] == number[-4:]


def test_same_customer_links_across_formats_and_salts_separate_sites():
    a = shield({"number": "138 1234 5678", "name": "张三"}, SALT)
    b = shield({"number": "+86 13812345678"}, SALT)
    c = shield({"number": "13812345678"}, b"t" * 32)
    assert a.hash == b.hash and a.hash.startswith("hs256:")
    assert a.hash != c.hash
    assert "13812345678" not in repr(a)


def test_bad_customer_fields_are_refused_without_quoting_the_value():
    with pytest.raises(ShieldError) as err:
        shield({"number": "13812345678<script>"}, SALT)
    assert "13812345678" not in str(err.value) and "number" in str(err.value)
    with pytest.raises(ShieldError, match="unknown field"):
        shield({"phone": "13812345678"}, SALT)
    with pytest.raises(ShieldError, match="expected a string"):
        shield({"number": 13812345678}, SALT)
    with pytest.raises(ShieldError):
        shield(["13812345678"], SALT)


def test_redact_removes_numbers_ids_and_emails_from_free_text():
    text = redact("CRM - 客户 13812345678 / 110101199003071234 / a.b@example.com - Firefox")
    assert "13812345678" not in text and "110101199003071234" not in text
    assert "a.b@example.com" not in text
    assert "Firefox" in text and "CRM" in text
    assert redact("Ticket CRM-2026-4711") == "Ticket CRM-2026-4711"
    assert "12345678" not in redact("call 12345678") and "5678" not in redact("call 138 1234 5678")
