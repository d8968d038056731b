"""PII detectors with validators, tolerant of OCR confusions.

:func:`find_pii` scans one string (an OCR'd screen row, an operation-log field, a window title)
and returns :class:`Finding` spans in that string. Numbers are found on a normalised copy:
full-width forms folded (NFKC), letters that OCR confuses with digits (O/o->0, l/I/|->1, S/s->5,
B->8, Z->2) read as digits inside mostly-numeric tokens, separators (space, dash, parentheses)
allowed between digit groups. Every candidate must pass its validator:

* ``mobile``: 11 digits ``1[3-9]x{9}``, optionally after +86 / 86 / 0086.
* ``landline``: area code (010, 02x or a 4-digit 0xxx) + a 7-8 digit number starting 2-9,
  optional extension.
* ``id18``: 18 characters, region digit 1-8, a real birth date, ISO 7064 mod 11-2 check digit;
  ``id15``: the legacy 15-digit form with a real YYMMDD birth date.
* ``bank_card``: 16-19 digits, issuer digit 3-6, Luhn check.
* ``email``: local@domain.tld.
* ``name`` / ``address`` / ``labelled``: the value after a label from policy ``masking.labels``
  (姓名, 客户, 地址, 证件号 ... with the suffixes 号码/号/码 and a colon), names introduced in chat
  ("我叫", "我是"), and addresses by their shape (省/市/区 ... 路/街 ... 号).

Decoys stay readable: order numbers, tracking numbers and tickets carry letter prefixes or start
with 20xx and fail the validators; amounts, dates, times, IPs and versions are cut into tokens by
their punctuation (``,.:/``) and never reach a validator as one number.

:func:`redact_text` replaces every finding with ``*`` for the operation log and window titles.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from station.policy import DEFAULT_LABELS

CONFUSABLE = {"O": "0", "o": "0", "l": "1", "I": "1", "|": "1", "]": "1", "[": "1", "!": "1",
              "S": "5", "s": "5", "B": "8"}
SEPARATORS = set(" -()\u00a0")
# brackets OCR reads for the parentheses of "(0731) 3623024": folded to parentheses (same length)
BRACKETS = {"{": "(", "}": ")", "\uff5b": "(", "\uff5d": ")"}
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
NUMBER_LABEL_KINDS = ("mobile", "landline", "id18", "bank_card", "email")
# label -> what follows it; labels from policy not listed here are treated as "name"
LABEL_KIND = {"姓名": "name", "客户": "name", "客户姓名": "name", "联系人": "name", "Name": "name",
              "Customer": "name", "户名": "name", "持卡人": "name",
              "地址": "address", "联系地址": "address", "住址": "address", "Address": "address",
              "证件号": "labelled", "身份证": "labelled", "身份证号": "labelled", "卡号": "labelled",
              "银行卡": "labelled", "手机": "labelled", "电话": "labelled", "邮箱": "labelled"}
LABEL_SUFFIXES = ("号码", "号", "码", "")
CJK = "\u4e00-\u9fff"
NAME_RE = re.compile(rf"[{CJK}][{CJK}·]{{1,4}}|[A-Z][a-z]+(?: [A-Z][a-z]+){{0,2}}")
CHAT_NAME_RE = re.compile(rf"(?:我叫|我是|本人|姓名是|名字是|叫我)([{CJK}]{{2,4}}?)(?=[，,。.；;！!\s]|$|，)")
ADDRESS_RE = re.compile(
    rf"(?:[{CJK}]{{2,7}}(?:省|自治区))?[{CJK}]{{2,6}}市[{CJK}]{{1,6}}(?:区|县|市)"
    rf"[{CJK}0-9]{{0,16}}?(?:路|街|大街|道|巷|村|镇)[0-9０-９]{{1,5}}号(?:[0-9]{{1,4}}(?:栋|幢|号楼|单元|层|室)?)*")
EMAIL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+\-]*(?: [A-Za-z0-9._%+\-]+)?\s?[@＠]\s?"
                      r"[A-Za-z0-9\-]+(?: ?[A-Za-z0-9\-]+)?(?:\s?\.\s?[A-Za-z0-9\-]+(?: ?[A-Za-z0-9\-]+)?)*"
                      r"\s?\.\s?[A-Za-z]{2,6}")
INLINE_NAME_LABELS = ("客户姓名", "姓名", "客户", "联系人", "持卡人", "户名")
INLINE_NUMBER_LABELS = ("证件号码", "证件号", "证件", "身份证号", "身份证", "卡号", "银行卡", "手机号", "手机",
                        "电话", "座机", "号码")
NOT_AFTER_LABEL = re.compile(r"(工号|会话|坐席|热线|稳健|风险|理财|产品|管理|详情|列表|资料|编号|等级|信息|查询|服务|经理|类型|来源|姓名|基本|中心|名称|满意|投诉|"
                             r"回访|电话|手机|地址|号码|证件|卡号|银行|邮箱|备注|状态|画像|标签|分析|来电|反馈|需求|"
                             r"同意|确认|签名|告知|须知|身份|本人|您好|你好|已|未|的)")
INLINE_NAME_RE = re.compile(rf"({'|'.join(INLINE_NAME_LABELS)}) ?([{CJK}]{{2,8}})")
INLINE_NUMBER_RE = re.compile(rf"({'|'.join(INLINE_NUMBER_LABELS)})(?:是|为)?[:：]?\s?([0-9０-９OolIS|B\]\[!Xx][0-9０-９OolIS|B\]\[!Xx \-]{{4,}}[0-9０-９OolIS|B\]\[!Xx])")
DIGITS_LIKE = re.compile(r"[0-9OolIS|B]")
# a number worth masking after a label: 6+ digits in one run (spaces, dashes, parentheses between
# groups); dates, times and amounts are cut by their punctuation and never make one
DATE_TIME = re.compile(r"(?:19|20)\d{2}\s?[-/.年]\s?\d{1,2}\s?[-/.月]\s?\d{1,2}日?|\b\d{1,2}[-/月]\d{1,2}日?\b|\d{1,2}\s?[:：]\s?\d{2}(?:\s?[:：]\s?\d{2})?")
NUMBER_AFTER_LABEL = re.compile(r"[0-9OolIS|B](?:[ \-()]{0,2}[0-9OolIS|B]){5,}")
# name labels recognised whatever the policy lists (the policy adds its own)
BUILTIN_NAME_LABELS = ("持卡人", "户名")
NAME_STOP = "来的在说要先女已于和与了对是，"
NOT_NAMES = {"先生", "女士", "客户", "会员", "本人", "用户", "您好", "你好", "坐席", "客服"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected value: ``text[start:end]`` of the scanned string."""

    rule: str
    start: int
    end: int
    value: str
    confidence: float = 1.0


# --- validators -------------------------------------------------------------------------------
def luhn_ok(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def id18_check_char(first17: str) -> str:
    return ID_CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def _date_ok(y: int, m: int, d: int) -> bool:
    try:
        day = _dt.date(y, m, d)
    except ValueError:
        return False
    return _dt.date(1900, 1, 1) <= day <= _dt.date.today()


def id18_ok(s: str) -> bool:
    if len(s) != 18 or not s[:17].isdigit() or s[0] not in "12345678":
        return False
    if not _date_ok(int(s[6:10]), int(s[10:12]), int(s[12:14])):
        return False
    return id18_check_char(s[:17]) == s[17].upper()


def id15_ok(s: str) -> bool:
    return (len(s) == 15 and s.isdigit() and s[0] in "12345678"
            and _date_ok(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12])))


def mobile_ok(s: str) -> bool:
    return len(s) == 11 and s[0] == "1" and s[1] in "3456789" and s.isdigit()


def card_ok(s: str) -> bool:
    return 16 <= len(s) <= 19 and s.isdigit() and s[0] in "3456" and luhn_ok(s)


def landline_ok(s: str) -> bool:
    if len(s) < 10 or not s.isdigit() or s[0] != "0":
        return False
    area = 3 if s[1] in "12" else 4
    if s[1] == "1" and s[:3] != "010":
        return False
    rest = s[area:]
    return 7 <= len(rest) <= 8 and rest[0] in "23456789"


# --- normalisation ------------------------------------------------------------------------------
def fold(text: str) -> str:
    """Same length as ``text``: full-width and compatibility forms folded char by char."""
    out = []
    for ch in text:
        n = unicodedata.normalize("NFKC", ch)
        n = BRACKETS.get(n, n)
        out.append(n if len(n) == 1 else ch)
    return "".join(out)


def _digitise(text: str) -> str:
    """Confusable letters -> digits inside mostly-numeric runs (same length).

    A token is a run of digits and confusable letters; tokens joined by single separators form a
    run. A token converts when it has a real digit and its run is mostly digits; letter prefixes
    (two leading confusables, or a token right after another letter) stay letters: 'SO-2024...'.
    """
    chars = list(text)
    n = len(chars)
    tokens: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if chars[i].isdigit() or chars[i] in CONFUSABLE:
            j = i
            while j < n and (chars[j].isdigit() or chars[j] in CONFUSABLE):
                j += 1
            tokens.append((i, j))
            i = j
        else:
            i += 1
    k = 0
    while k < len(tokens):
        run = [tokens[k]]
        while k + 1 < len(tokens) and tokens[k + 1][0] - run[-1][1] == 1 and chars[run[-1][1]] in SEPARATORS:
            k += 1
            run.append(tokens[k])
        k += 1
        total = sum(e - s for s, e in run)
        digits = sum(chars[x].isdigit() for s, e in run for x in range(s, e))
        if not digits or digits * 2 < total:
            continue
        for pos, (s, e) in enumerate(run):
            if not any(chars[x].isdigit() for x in range(s, e)) and (
                    e - s > 1 or pos == 0 or (e < n and chars[e].isascii() and chars[e].isalpha())):
                continue  # a letter word; a lone confusable inside a number is converted
            lead = 0
            while s + lead < e and not chars[s + lead].isdigit():
                lead += 1
            prefixed = s > 0 and chars[s - 1].isascii() and chars[s - 1].isalpha()
            first = s + lead if (lead >= 2 or prefixed) else s
            for x in range(first, e):
                if not chars[x].isdigit():
                    chars[x] = CONFUSABLE[chars[x]]
    return "".join(chars)


def _groups(norm: str) -> Iterable[list[tuple[int, int]]]:
    """Runs of digit groups joined by separators: lists of (start, end) of each digit group."""
    n = len(norm)
    i = 0
    while i < n:
        if not norm[i].isdigit():
            i += 1
            continue
        groups: list[tuple[int, int]] = []
        while i < n:
            j = i
            while j < n and norm[j].isdigit():
                j += 1
            # a trailing X (ID check character) that ends the token belongs to the group
            if j < n and norm[j] in "Xx" and (j + 1 == n or not norm[j + 1].isalnum()):
                j += 1
            groups.append((i, j))
            k = j
            seps = 0
            while k < n and norm[k] in SEPARATORS and seps < 3:
                k += 1
                seps += 1
            if k < n and norm[k].isdigit() and k > j:
                i = k
                continue
            i = j
            break
        yield groups


def _letter_before(norm: str, start: int) -> bool:
    k = start - 1
    while k >= 0 and norm[k] in "-":
        k -= 1
    return k >= 0 and norm[k].isascii() and norm[k].isalpha()


def _letter_after(norm: str, end: int) -> bool:
    return end < len(norm) and norm[end].isascii() and norm[end].isalpha() and norm[end] not in "Xx"


def _number_findings(text: str, norm: str) -> list[Finding]:
    found: list[Finding] = []
    for groups in _groups(norm):
        taken: list[tuple[int, int]] = []
        best: list[Finding] = []
        for a in range(len(groups)):
            for b in range(len(groups) - 1, a - 1, -1):
                s, e = groups[a][0], groups[b][1]
                if any(s < te and e > ts for ts, te in taken):
                    continue
                if _letter_before(norm, s) or _letter_after(norm, e):
                    continue
                raw = "".join(norm[x:y] for x, y in groups[a:b + 1])
                rule = _classify_number(raw, norm, s)
                if rule == "bank_card" and _grouping_continues(groups, a, b):
                    rule = None  # part of a longer 4-grouped number that fails as a whole
                if rule is None:
                    continue
                while s > 0 and norm[s - 1] in "+(":
                    s -= 1
                if s > 1 and norm[s - 1] == " " and norm[s - 2] in "+(":
                    s -= 2  # "+ 86 ...": a country code's plus read apart
                    while s > 0 and norm[s - 1] in "+(":
                        s -= 1
                best.append(Finding(rule, s, e, text[s:e]))
                taken.append((s, e))
                break
        found.extend(best)
    return found


def _grouping_continues(groups: list[tuple[int, int]], a: int, b: int) -> bool:
    if b - a < 1 or any(e - s != 4 for s, e in groups[a:b + 1]):
        return False
    after = b + 1 < len(groups) and groups[b + 1][1] - groups[b + 1][0] <= 4
    before = a > 0 and groups[a - 1][1] - groups[a - 1][0] == 4
    return after or before


def _classify_number(raw: str, norm: str, start: int) -> str | None:
    if raw.startswith("86") and mobile_ok(raw[2:]) and len(raw) == 13:
        return "mobile"
    if raw.startswith("0086") and mobile_ok(raw[4:]):
        return "mobile"
    if mobile_ok(raw):
        return "mobile"
    if id18_ok(raw):
        return "id18"
    if card_ok(raw):
        return "bank_card"
    if id15_ok(raw):
        return "id15"
    if landline_ok(raw):
        return "landline"
    if raw[:1] == "0" and len(raw) > 10:
        # landline with an extension: area + number + 1-4 digit extension
        for cut in range(len(raw) - 1, len(raw) - 5, -1):
            if cut > 9 and landline_ok(raw[:cut]):
                return "landline"
    return None


# --- labels and names ---------------------------------------------------------------------------
def _one_edit(a: str, b: str) -> bool:
    """a and b differ by at most one substitution, insertion or deletion."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    if len(a) > len(b):
        a, b = b, a
    return any(b[:k] + b[k + 1:] == a for k in range(len(b)))


def label_kind(label_text: str, labels: Sequence[str] = DEFAULT_LABELS, fuzzy: bool = False) -> str | None:
    """What a label announces ('name', 'address', 'labelled') or None if it is no label.
    ``fuzzy``: also a label misread by one character (column headers, read once and trusted)."""
    t = fold(label_text).strip().rstrip(":：").strip()
    if not t:
        return None
    if fuzzy and len(t) >= 3 and label_kind(t, labels) is None:
        for label in labels:
            if len(label) >= 2 and any(len(label + sfx) >= 3 and _one_edit(t, label + sfx)
                                       for sfx in LABEL_SUFFIXES):
                return LABEL_KIND.get(label, "name")
        return None
    best: tuple[int, str] | None = None
    for label in labels:
        for suffix in LABEL_SUFFIXES:
            if t.endswith(label + suffix):
                kind = LABEL_KIND.get(label, "name")
                if best is None or len(label) > best[0]:
                    best = (len(label), kind)
    return best[1] if best else None


def _label_regex(labels: Sequence[str]) -> re.Pattern[str]:
    alts = "|".join(sorted((re.escape(x) for x in labels), key=len, reverse=True))
    return re.compile(rf"({alts})(?:号码|号|码)?\s*[:：]\s*|({alts})(?:号码|号|码)?\t\s*")


_LABEL_CACHE: dict[tuple[str, ...], re.Pattern[str]] = {}


def _labelled_findings(text: str, labels: Sequence[str]) -> list[Finding]:
    key = tuple(labels)
    rx = _LABEL_CACHE.get(key)
    if rx is None:
        rx = _LABEL_CACHE[key] = _label_regex(labels)
    out: list[Finding] = []
    for m in rx.finditer(text):
        label = m.group(1) or m.group(2)
        # the label must start a phrase: not preceded by a CJK character that changes its meaning
        head = text[max(0, m.start() - 2):m.start()]
        kind = label_kind(text[m.start():m.end()], labels) or LABEL_KIND.get(label, "name")
        if head and re.search(rf"[{CJK}]$", head) and label_kind(head + label, labels) is None:
            if not re.search(r"(客户|联系|备用|证件|身份|银行|手机|电子|常用|家庭|固定)$", head):
                continue
        v0 = m.end()
        v1 = v0
        while v1 < len(text) and text[v1] != "\t":
            v1 += 1
        value = text[v0:v1]
        if not value.strip():
            continue
        if kind == "name":
            nm = NAME_RE.match(value.strip())
            if not nm or nm.group(0) in NOT_NAMES or label_kind(nm.group(0), labels) is not None \
                    or NOT_AFTER_LABEL.match(nm.group(0)):
                continue
            off = v0 + (len(value) - len(value.lstrip()))
            out.append(Finding("name", off, off + len(nm.group(0)), nm.group(0)))
        else:
            stripped = value.rstrip()
            off = v0 + (len(value) - len(value.lstrip()))
            if kind == "labelled" and ("*" in stripped or label_kind(stripped, labels) is not None
                                       or (not NUMBER_AFTER_LABEL.search(DATE_TIME.sub("/", fold(stripped))) and "@" not in stripped)):
                continue  # already shown shielded, another label (a table header), or no number
                # (a date, a time or an amount after "骚扰电话" is no customer number)
            out.append(Finding(kind if kind == "address" else "labelled", off, v0 + len(stripped),
                               stripped.strip()))
    return out


def find_pii(text: str, labels: Sequence[str] = DEFAULT_LABELS) -> list[Finding]:
    """All findings in ``text``, sorted, overlapping findings merged into the first rule."""
    if not text:
        return []
    folded = fold(text)
    norm = _digitise(folded)
    if any(x not in labels for x in BUILTIN_NAME_LABELS):
        labels = [*labels, *(x for x in BUILTIN_NAME_LABELS if x not in labels)]
    found = _number_findings(text, norm)
    if "." in norm:  # dashes read as dots at 11-12 px ("130.5112.8286"): phones and IDs only
        dotted = re.sub(r"(?<=\d)\.(?=\d)", "-", norm)
        if dotted != norm:
            found += [f for f in _number_findings(text, dotted) if f.rule in ("mobile", "landline", "id18")
                      and "." in text[f.start:f.end] and not _overlaps(f, found)]
    for m in EMAIL_RE.finditer(folded):
        found.append(Finding("email", m.start(), m.end(), text[m.start():m.end()]))
    for m in ADDRESS_RE.finditer(folded):
        found.append(Finding("address", m.start(), m.end(), text[m.start():m.end()]))
    for m in CHAT_NAME_RE.finditer(folded):
        if m.group(1) not in NOT_NAMES:
            found.append(Finding("name", m.start(1), m.end(1), m.group(1)))
    found.extend(_labelled_findings(folded, labels))
    for m in INLINE_NAME_RE.finditer(folded):
        cand = m.group(2)
        if NOT_AFTER_LABEL.match(cand):
            continue
        n = len(cand) if len(cand) <= 4 else 3
        for k in range(2, n):
            if cand[k] in NAME_STOP:
                n = k
                break
        found.append(Finding("name", m.start(2), m.start(2) + n, text[m.start(2):m.start(2) + n]))
    for m in INLINE_NUMBER_RE.finditer(folded):
        if sum(c.isdigit() for c in DATE_TIME.sub("/", _digitise(m.group(2)))) >= 6:
            found.append(Finding("labelled", m.start(2), m.end(2), text[m.start(2):m.end(2)]))
    found.sort(key=lambda f: (f.start, -f.end))
    merged: list[Finding] = []
    for f in found:
        if merged and f.start < merged[-1].end:
            last = merged[-1]
            if f.end > last.end:
                merged[-1] = Finding(last.rule, last.start, f.end, text[last.start:f.end], last.confidence)
            continue
        merged.append(f)
    return merged


def _overlaps(f: Finding, others: Sequence[Finding]) -> bool:
    return any(f.start < o.end and f.end > o.start for o in others)


def redact_text(text: str, labels: Sequence[str] = DEFAULT_LABELS) -> tuple[str, list[Finding]]:
    """``text`` with every finding replaced by ``*`` (same length), and the findings."""
    findings = find_pii(text, labels)
    chars = list(text)
    for f in findings:
        for k in range(f.start, f.end):
            if not chars[k].isspace():
                chars[k] = "*"
    return "".join(chars), findings
