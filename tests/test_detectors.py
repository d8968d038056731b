"""PII detectors: property tests over formatting and OCR confusions, validators, decoys."""

from __future__ import annotations

import datetime as dt

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from recorder.masking.detectors import find_pii, id18_check_char, id18_ok, label_kind, luhn_ok, redact_text

FULLWIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}
CONFUSE = {"0": "O", "1": "l", "5": "S", "8": "B"}
CONFUSE_ALT = {"1": "I"}
settings.register_profile("lean", max_examples=150, deadline=None)
settings.load_profile("lean")


def luhn_complete(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


@st.composite
def id18s(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from("12345678")) + "".join(draw(st.lists(st.sampled_from("0123456789"),
                                                                       min_size=5, max_size=5)))
    born = draw(st.dates(dt.date(1920, 1, 1), dt.date(2015, 12, 31)))
    seq = f"{draw(st.integers(0, 999)):03d}"
    first = region + born.strftime("%Y%m%d") + seq
    return first + id18_check_char(first)


@st.composite
def cards(draw: st.DrawFn) -> str:
    n = draw(st.integers(16, 19))
    prefix = draw(st.sampled_from(["62", "4", "5", "35"]))
    body = prefix + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=n - 1 - len(prefix),
                                          max_size=n - 1 - len(prefix))))
    return luhn_complete(body)


@st.composite
def mobiles(draw: st.DrawFn) -> str:
    return "1" + draw(st.sampled_from("3456789")) + f"{draw(st.integers(0, 10**9 - 1)):09d}"


def group(s: str, sizes: list[int], sep: str) -> str:
    out, k = [], 0
    for n in sizes:
        out.append(s[k:k + n])
        k += n
    if k < len(s):
        out.append(s[k:])
    return sep.join(p for p in out if p)


@st.composite
def ocr_noise(draw: st.DrawFn, s: str) -> str:
    """Full-width digits and OCR letter confusions on non-adjacent positions (at most 1 in 4)."""
    chars = list(s)
    if draw(st.booleans()):
        chars = [FULLWIDTH.get(c, c) for c in chars]
    cands = [i for i, c in enumerate(s) if c in CONFUSE]
    picked = draw(st.lists(st.sampled_from(cands), unique=True, max_size=max(0, len(s) // 4))) if cands else []
    last = -9
    for i in sorted(picked):
        if i - last > 1:
            alt = CONFUSE_ALT.get(s[i]) if draw(st.booleans()) else None
            chars[i] = alt or CONFUSE[s[i]]
            last = i
    return "".join(chars)


CONTEXT = st.sampled_from([("", ""), ("证件号码：", ""), ("客户说号码是", "，请核实"), ("No. ", " ok"),
                           ("备注 ", " 已核验")])


def covering(text: str, start: int, end: int) -> list[str]:
    return [f.rule for f in find_pii(text) if f.start <= start and f.end >= end]


@given(id18s(), st.sampled_from([[18], [6, 8, 4], [6, 4, 4, 4], [3, 3, 4, 4, 4]]), st.sampled_from([" ", "-", ""]),
       CONTEXT, st.data())
def test_valid_id_numbers_are_found_across_formatting_and_ocr_confusions(num, sizes, sep, ctx, data) -> None:
    if data.draw(st.booleans()) and num.endswith("X"):
        num = num[:-1] + "x"
    shown = data.draw(ocr_noise(group(num, sizes, sep)))
    text = ctx[0] + shown + ctx[1]
    rules = covering(text, len(ctx[0]), len(ctx[0]) + len(shown))
    assert rules and rules[0] in ("id18", "labelled", "bank_card"), (text, find_pii(text))


@given(cards(), st.sampled_from([[4, 4, 4, 4], [19], [6, 13], [4, 4, 4, 4, 3]]), st.sampled_from([" ", "-", ""]),
       CONTEXT, st.data())
def test_luhn_valid_cards_are_found_across_formatting_and_ocr_confusions(num, sizes, sep, ctx, data) -> None:
    shown = data.draw(ocr_noise(group(num, sizes, sep)))
    text = ctx[0] + shown + ctx[1]
    rules = covering(text, len(ctx[0]), len(ctx[0]) + len(shown))
    assert rules and rules[0] in ("bank_card", "id18", "labelled"), (text, find_pii(text))


@given(mobiles(), st.sampled_from(["{}", "{0:.3} {1} {2}", "{0:.3}-{1}-{2}", "+86 {}", "+86-{}", "86{}",
                                   "+86 {0:.3} {1} {2}"]), CONTEXT, st.data())
def test_mobile_numbers_are_found_with_and_without_country_code_and_grouping(num, fmt, ctx, data) -> None:
    shown = fmt.format(num, num[3:7], num[7:]) if "{1}" in fmt else fmt.format(num)
    if fmt.startswith("{0:.3}") or " {0:.3}" in fmt:
        shown = fmt.replace("{0:.3}", num[:3]).format(None, num[3:7], num[7:])
    shown = data.draw(ocr_noise(shown))
    text = ctx[0] + shown + ctx[1]
    rules = covering(text, len(ctx[0]), len(ctx[0]) + len(shown))
    assert rules and rules[0] in ("mobile", "labelled"), (text, find_pii(text))


@given(id18s(), st.sampled_from("0123456789X"))
def test_id_with_a_wrong_check_digit_is_not_flagged_as_an_id(num, wrong) -> None:
    assume(wrong != num[-1])
    bad = num[:-1] + wrong
    assert not id18_ok(bad)
    assert "id18" not in [f.rule for f in find_pii(bad)]


@given(cards(), st.integers(0, 18), st.integers(1, 9))
def test_card_failing_luhn_is_not_flagged_as_a_card(num, pos, delta) -> None:
    pos %= len(num)
    assume(pos > 0)  # keep the issuer digit
    bad = num[:pos] + str((int(num[pos]) + delta) % 10) + num[pos + 1:]
    assert not luhn_ok(bad)
    assert "bank_card" not in [f.rule for f in find_pii(bad)]
    assert "bank_card" not in [f.rule for f in find_pii(group(bad, [4, 4, 4, 4], " "))]


DECOYS = st.one_of(
    st.builds(lambda d, n: f"DD{d:%Y%m%d}{n:06d}", st.dates(dt.date(2020, 1, 1), dt.date(2026, 1, 1)),
              st.integers(0, 999999)),
    st.builds(lambda d, n: f"SO-{d:%Y%m%d}-{n:05d}", st.dates(dt.date(2020, 1, 1), dt.date(2026, 1, 1)),
              st.integers(0, 99999)),
    st.builds(lambda d, n: f"CALL-{d:%Y%m%d}-{n:06d}", st.dates(dt.date(2020, 1, 1), dt.date(2026, 1, 1)),
              st.integers(0, 999999)),
    st.builds(lambda p, n: f"{p}{n}", st.sampled_from(["JD", "YT", "ZTO", "SF", "GD"]), st.integers(10**11, 10**14)),
    st.builds(lambda a: f"{a:,.2f}元", st.floats(0, 10**8, allow_nan=False)),
    st.builds(lambda a: f"¥{a:,.2f}", st.floats(0, 10**8, allow_nan=False)),
    st.builds(lambda d: f"{d:%Y-%m-%d %H:%M:%S}", st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2030, 1, 1))),
    st.builds(lambda d: f"{d:%m-%d %H:%M}", st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2030, 1, 1))),
    st.builds(lambda a, b, c, d: f"10.{a}.{b}.{c} v{d}.{a % 10}.{b % 20}", st.integers(0, 255),
              st.integers(0, 255), st.integers(0, 255), st.integers(1, 9)),
    st.builds(lambda n: f"工号 {n}", st.integers(1000, 99999)),
    st.builds(lambda n: f"排队 {n} 人", st.integers(0, 500)),
    st.sampled_from(["400-820-8820", "95533", "10086", "800-830-8300", "2101**********9699",
                     "6222*********1694", "客户编号：266765280", "客户管理", "会员等级：钻石会员"]),
)


@given(DECOYS, st.sampled_from([("", ""), ("订单 ", " 已发货"), ("最近工单：", "")]))
def test_decoys_are_left_readable(decoy, ctx) -> None:
    text = ctx[0] + decoy + ctx[1]
    assert find_pii(text) == [], text


def test_other_kinds_by_example() -> None:
    cases = {
        "邮箱：zhuluo7291@163.com": ("email", "zhuluo7291@163.com"),
        "ma_l lin@example.com.cn": ("email", "ma_l lin@example.com.cn"),
        "(0591)3806-9560": ("landline", "(0591)3806-9560"),
        "座机022-41904474也可以": ("landline", "022-41904474"),
        "0591-8965708-751": ("landline", "0591-8965708-751"),
        "客户姓名：\t孙凯": ("name", "孙凯"),
        "联系人：王小明": ("name", "王小明"),
        "我叫陆文，上周买的东西有问题": ("name", "陆文"),
        "客户严娜平来电咨询": ("name", "严娜平"),
        "CRM - 客户 张三": ("name", "张三"),
        "上海市徐汇区珞喻路851号13栋606室": ("address", "上海市徐汇区珞喻路851号13栋606室"),
        "地址：\t北京朝阳建国门外大街1号": ("address", "北京朝阳建国门外大街1号"),
        "证件500103196502159101，": ("labelled", "500103196502159101"),  # check digit misread
        "13206/53062 l5": None,
    }
    for text, want in cases.items():
        got = [(f.rule, f.value) for f in find_pii(text)]
        if want is None:
            assert got == [], text
        else:
            assert want in got, (text, got)


def test_labels_come_from_policy() -> None:
    assert [f.value for f in find_pii("投保人：李四")] == []
    assert [f.value for f in find_pii("投保人：李四", labels=["投保人"])] == ["李四"]
    assert label_kind("联系地址：") == "address" and label_kind("客户编号：") is None


def test_redact_text_hides_every_character_of_each_value() -> None:
    text = "客户 13912345678 来电，卡号 6222 0212 3456 7890 128，邮箱 a.b@example.com，订单 DD20240512000001"
    assert luhn_ok("6222021234567890128")
    red, findings = redact_text(text)
    assert len(red) == len(text)
    assert {f.rule for f in findings} >= {"mobile", "bank_card", "email"}
    for secret in ("13912345678", "6222", "7890", "a.b@example"):
        assert secret not in red
    assert "DD20240512000001" in red and "订单" in red


def test_unseen_layout_formats_issue_18() -> None:
    """Separated and international numbers, brackets read for parentheses, a country code's plus
    read apart, names after built-in labels; dates after a word ending in a label stay readable."""
    cases = {
        "177-9708-7420": ("mobile", "177-9708-7420"),
        "150 6373 3110": ("mobile", "150 6373 3110"),
        "+86 138 1234 5678": ("mobile", "+86 138 1234 5678"),
        "(0731) 3623024-540": ("landline", "(0731) 3623024-540"),
        "座机{020}86086251工作日有人": ("landline", "{020}86086251"),
        "电话+ 8615965803577随时可以联系": ("mobile", "+ 8615965803577"),
        "持卡人：\t曾刚玉": ("name", "曾刚玉"),
        "110105 19491231 002X": ("id18", "110105 19491231 002X"),
        "6222 0212 3456 7890 128": ("bank_card", "6222 0212 3456 7890 128"),
    }
    for text, want in cases.items():
        got = [(f.rule, f.value) for f in find_pii(text)]
        assert want in got, (text, got)
    for text in ("骚扰电话\t2024-05-13 04:11", "骚扰电话\t09-19 03:13", "客户信息 Customer\t工号 7443",
                 "企业微信 - 客户会话", "风险等级：\tC3 稳健型"):
        assert find_pii(text) == [], text
