"""From OCR'd lines to mask regions: the decisions shared by the still and the real-time path.

Lines are grouped into rows (vertical overlap) and joined left to right: a small gap becomes a
space, a wide gap a tab (a hard break numbers never cross, but label context does). Detectors run
on each row; findings map back to the characters' x ranges read by the OCR. Column headers that
are labels (姓名, 手机号码 ... without a colon) mark the cells below them. A line that is not yet
read (real-time path) is masked whole, and so are lines sharing its row or column, whose label
context is unknown. Numbers read with low confidence are masked whole, and so are rows cut by a
viewport (scroll area) edge: thin strips and the cells sharing their cut edge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from recorder.masking.detectors import NAME_RE, NOT_NAMES, find_pii, label_kind
from recorder.masking.lines import Box
from recorder.masking.ocr import Reading

PAD_X, PAD_Y = 2, 2
LOW_CONF = 0.5
UNREADABLE = 0.6
CLIPPED_H = 8
CLIPPED_STRIP_W = 20  # a thin strip this wide holds several glyphs (a box corner does not)
CLIPPED_SHORTER = 0.8  # a clipped row's cell keeps at most this share of its column's line height
DIGITISH = re.compile(r"[0-9０-９OolIS|B]")
NUMBER_RUN = re.compile(r"[0-9０-９OolIS|B][0-9０-９OolIS|B \-]{5,}[0-9０-９OolIS|B]")
# a customer number in a cell under a number header: 7+ digits in one run (a mobile's last part,
# an ID, a card); "坐席 4543 15:30" or "1,000.00元" under a header word of a chat line are not
CELL_NUMBER = re.compile(r"[0-9０-９OolIS|B](?:[ \-()]{0,2}[0-9０-９OolIS|B]){6,}")
DIGIT_RUN4 = re.compile(r"[0-9０-９]{4}")


@dataclass(slots=True)
class Line:
    box: Box                     # ink box in frame pixels
    crop_x0: int = 0             # x of the OCR crop's left edge (spans are relative to it)
    reading: Reading | None = None
    key: bytes = b""


@dataclass(frozen=True, slots=True)
class Region:
    box: Box
    rule: str
    confidence: float = 1.0
    value: str = field(default="", repr=False)  # never logged; hashed into the ledger


def _rows(lines: Sequence[Line]) -> list[list[int]]:
    order = sorted(range(len(lines)), key=lambda i: (lines[i].box.y0 + lines[i].box.y1) / 2)
    rows: list[list[int]] = []
    for i in order:
        b = lines[i].box
        placed = False
        best, best_overlap = None, 0.0
        for row in rows[-6:]:
            for j in row:
                r = lines[j].box
                overlap = (min(b.y1, r.y1) - max(b.y0, r.y0)) / max(1, min(b.h, r.h))
                if overlap >= 0.5 and overlap > best_overlap:
                    best, best_overlap = row, overlap
        if best is not None:
            best.append(i)
            placed = True
        if not placed:
            rows.append([i])
    for row in rows:
        row.sort(key=lambda i: lines[i].box.x0)
    return rows


def _char_box(line: Line, first: int, last: int, width: int, height: int) -> Box:
    r = line.reading
    b = line.box
    if r is None or not r.spans or first >= len(r.spans):
        return b.pad(PAD_X, PAD_Y, width, height)
    spans = r.spans
    last = min(last, len(spans) - 1)
    left = line.crop_x0 + (spans[first][0] + spans[first - 1][1]) / 2 if first > 0 else b.x0
    right = line.crop_x0 + (spans[last][1] + spans[last + 1][0]) / 2 if last + 1 < len(spans) else b.x1
    x0 = max(b.x0, int(left) - PAD_X) if first > 0 else b.x0 - PAD_X
    x1 = min(b.x1, int(right + 0.999) + PAD_X) if last + 1 < len(spans) else b.x1 + PAD_X
    ink = r.ink_cols
    if ink:  # edges between glyphs: see _edge
        if first > 0:
            x0 = max(b.x0, line.crop_x0 + _edge(ink, spans[first - 1], spans[first], x0 - line.crop_x0, -1, b.h))
        if last + 1 < len(spans):
            x1 = min(b.x1, line.crop_x0 + 1 + _edge(ink, spans[last], spans[last + 1], x1 - 1 - line.crop_x0, 1, b.h))
    return Box(max(0, x0), max(0, b.y0 - PAD_Y), min(width, x1), min(height, b.y1 + PAD_Y))


def _edge(ink: bytes, before: tuple[float, float], after: tuple[float, float], est: int, out: int, h: int) -> int:
    """The crop column where a finding's mask ends, between the glyph read at ``before`` and the one
    at ``after`` (CTC spans, a few pixels off at 11-13 px); ``out`` is -1 for a left edge, +1 for
    a right edge, ``est`` the padded midpoint estimate. A blank gap of 2+ columns between the two
    glyphs' centres (a space, the gap between a number and the text beside it) is where the mask
    stops, its last blank column next to the finding masked; with no such gap the estimate moves
    outwards off any glyph it lies on to the next blank column (never inwards)."""
    lo = int((before[0] + before[1]) / 2) + 1
    hi = min(len(ink), int((after[0] + after[1]) / 2))
    best: tuple[float, int] | None = None
    c = lo
    while c < hi:
        if ink[c]:
            c += 1
            continue
        g0 = c
        while c < hi and not ink[c]:
            c += 1
        if c - g0 >= 2:
            edge = c if out < 0 else g0 - 1  # the blank column next to the finding's glyph
            edge = edge - 1 if out < 0 else edge + 1  # and one more: never a grey fringe left
            dist = abs((g0 + c - 1) / 2 - est)
            if best is None or dist < best[0]:
                best = (dist, edge)
    if best is not None:
        return best[1]
    c = est
    reach = max(3, h // 2)
    stop = c + out * reach
    while 0 <= c < len(ink) and c != stop and ink[c]:
        c += out
    return min(est, c) if out < 0 else max(est, c)


def decide(lines: Sequence[Line], width: int, height: int,
           labels: Sequence[str]) -> list[Region]:
    """Mask regions for one frame's lines (read or not)."""
    regions: list[Region] = []
    pending = [i for i, ln in enumerate(lines) if ln.reading is None]
    for i in pending:
        regions.append(Region(lines[i].box.pad(PAD_X, PAD_Y, width, height), "unresolved", 0.0))
    rows = _rows(lines)
    pending_set = set(pending)
    row_of: dict[int, int] = {}
    for rn, row in enumerate(rows):
        for i in row:
            row_of[i] = rn
    masked_whole: set[int] = set(pending)
    # rows with an unread line: the others in that row lack their label context
    for row in rows:
        if any(i in pending_set for i in row):
            for i in row:
                if i not in masked_whole:
                    masked_whole.add(i)
                    regions.append(Region(lines[i].box.pad(PAD_X, PAD_Y, width, height), "context_pending", 0.0))
    # unread lines may be (or hold) column headers (姓名, 手机号码): the cells below them wait too
    for i in pending:
        p = lines[i].box
        for j, cell in enumerate(lines):
            c = cell.box
            if j in masked_whole or c.y0 <= p.y1 or c.y0 > p.y1 + 900:
                continue
            if _in_column(c, p):
                masked_whole.add(j)
                regions.append(Region(c.pad(PAD_X, PAD_Y, width, height), "context_pending", 0.0))
    for row in rows:
        if any(i in pending_set for i in row):
            continue
        parts: list[str] = []
        index: list[tuple[int, int]] = []  # row text position -> (line, char)
        prev: Box | None = None
        for i in row:
            ln = lines[i]
            text = ln.reading.text if ln.reading else ""
            if prev is not None:
                gap = ln.box.x0 - prev.x1
                sep = " " if gap <= 1.2 * max(ln.box.h, prev.h) else "\t"
                parts.append(sep)
                index.append((-1, -1))
            for k, _ in enumerate(text):
                index.append((i, k))
            parts.append(text)
            prev = ln.box
        row_text = "".join(parts)
        for f in find_pii(row_text, labels):
            per_line: dict[int, list[int]] = {}
            for pos in range(f.start, f.end):
                li, ci = index[pos]
                if li >= 0:
                    per_line.setdefault(li, []).append(ci)
            boxes = [_char_box(lines[li], min(cis), max(cis), width, height)
                     for li, cis in per_line.items() if li not in masked_whole]
            if boxes:  # one box over the whole finding, gaps between its lines included
                u = Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes),
                        max(b.x1 for b in boxes), max(b.y1 for b in boxes))
                conf = min((rd.confidence for li in per_line if (rd := lines[li].reading) is not None),
                           default=0.0)
                regions.append(Region(u, f.rule, conf, f.value))
    # column headers that are labels mark the cells below them
    for i, hdr, htext, segment in _header_segments(lines):
        kind = label_kind(htext, labels, fuzzy=True)
        if kind is None or (not segment and _row_label(lines, rows, row_of, i, kind)):
            continue
        for j, cell in enumerate(lines):
            if j == i or j in masked_whole or cell.box.y0 <= hdr.y1 or cell.box.y0 > hdr.y1 + 900:
                continue
            if not _in_column(cell.box, hdr):
                continue
            cr = cell.reading
            if cr is None:
                continue
            text = cr.text.strip()
            if kind == "name":
                text = re.sub(r"^[\x00-\x7f\W]+", "", text)  # a row number joined to the cell
                hit = bool(NAME_RE.fullmatch(text)) and text not in NOT_NAMES
                if segment:  # a word of a wider line ("客户信息 Customer"): only what looks like a name
                    hit = hit and _person_name(text)
            elif kind == "address":
                hit = len(text) >= 4
            else:
                hit = "*" not in text and (bool(CELL_NUMBER.search(text)) or "@" in text)
            if hit:
                regions.append(Region(cell.box.pad(PAD_X, PAD_Y, width, height),
                                      "name" if kind == "name" else kind if kind == "address" else "labelled",
                                      cr.confidence, text))
    # a column of person names (three or more aligned cells: surname + 1-3 characters), whatever
    # its header says or whether it was read: names in tables need no label to be masked
    _name_columns(lines, masked_whole, regions, width, height)
    # numbers read with low confidence; lines too thin to read (clipped at a viewport edge) or
    # read with low confidence overall: masked whole, never trusted
    clipped = _clipped_lines(lines, rows)
    for i, ln in enumerate(lines):
        r = ln.reading
        if r is None or i in masked_whole:
            continue
        if i in clipped or (r.text and r.confidence < UNREADABLE):
            regions.append(Region(ln.box.pad(PAD_X, PAD_Y, width, height),
                                  "clipped" if i in clipped else "unreadable", r.confidence, r.text))
            continue
        if not r.char_conf:
            continue
        for m in NUMBER_RUN.finditer(r.text):
            if len(DIGITISH.findall(m.group(0))) < 7 or "*" in r.text:
                continue
            conf = min(r.char_conf[m.start():m.end()], default=1.0)
            if conf < LOW_CONF:
                regions.append(Region(_char_box(ln, m.start(), m.end() - 1, width, height), "uncertain",
                                      conf, m.group(0)))
    return regions


def _row_label(lines: Sequence[Line], rows: Sequence[Sequence[int]], row_of: dict[int, int], i: int,
               kind: str) -> bool:
    """A label without a colon whose value stands right of it in its row ("地址  湖南省长沙市...",
    a form): the row's detectors read that value; the lines below it are other labels, not cells
    of a column it heads."""
    row = rows[row_of[i]] if i in row_of else []
    right = [j for j in row if lines[j].box.x0 >= lines[i].box.x1 and lines[j].reading is not None]
    if not right:
        return False
    j = min(right, key=lambda k: lines[k].box.x0)
    rd = lines[j].reading
    text = rd.text.strip() if rd is not None else ""
    if kind == "name":
        return _person_name(text)
    if kind == "address":
        return len(text) >= 8 and bool(re.search(r"[省市区县路街号]", text))
    return bool(CELL_NUMBER.search(text)) or "@" in text


def _clipped_lines(lines: Sequence[Line], rows: Sequence[Sequence[int]]) -> set[int]:
    """Lines clipped at a viewport (scroll area) edge, which OCR never reads reliably.

    A line at most ``CLIPPED_H`` high is a strip cut by an edge. An edge cuts a whole row, and
    glyphs that reach further than the others (CJK beside digits) keep a few more pixels without
    becoming legible; so a line is clipped too when its row holds a wide thin strip (several
    glyphs, not a box corner) whose cut edge it shares (bottom or top within 1 px) and it is
    shorter than the nearest line of its own column (a table cell above or below it), or its
    column has no other line to compare with (fail closed).
    """
    out = {i for i, ln in enumerate(lines) if ln.box.h <= CLIPPED_H}
    for row in rows:
        strips = [lines[i].box for i in row if i in out and lines[i].box.w >= CLIPPED_STRIP_W]
        if not strips:
            continue
        for i in row:
            b = lines[i].box
            if i in out or not any(abs(b.y1 - t.y1) <= 1 or abs(b.y0 - t.y0) <= 1 for t in strips):
                continue
            ref = _column_neighbour(lines, i)
            if ref is None or b.h <= CLIPPED_SHORTER * ref.h:
                out.add(i)
    return out


def _column_neighbour(lines: Sequence[Line], i: int) -> Box | None:
    """The nearest line above or below line ``i`` overlapping at least half its width."""
    b = lines[i].box
    best: Box | None = None
    for j, ln in enumerate(lines):
        c = ln.box
        if j == i or (c.y1 > b.y0 and c.y0 < b.y1) or abs(c.y0 - b.y0) > 8 * max(b.h, c.h):
            continue
        if min(b.x1, c.x1) - max(b.x0, c.x0) < 0.5 * min(b.w, c.w):
            continue
        if best is None or abs(c.y0 - b.y0) < abs(best.y0 - b.y0):
            best = c
    return best


def _header_segments(lines: Sequence[Line]) -> list[tuple[int, Box, str, bool]]:
    """Possible column headers: short read lines without a colon, and the space-separated parts
    of wider lines (a header row detected as one line), with their x ranges from the OCR spans
    (the last field says so). A wider line holding a 4-digit run is content ("身份证 3207..."),
    not a header row."""
    out: list[tuple[int, Box, str, bool]] = []
    for i, ln in enumerate(lines):
        r = ln.reading
        if r is None or not r.text or ":" in r.text or "：" in r.text:
            continue
        if len(r.text) <= 8:
            out.append((i, ln.box, r.text, False))
            continue
        if not r.spans or len(r.spans) != len(r.text) or DIGIT_RUN4.search(r.text):
            continue
        for m in re.finditer(r"\S+", r.text):
            if len(m.group(0)) > 8:
                continue
            x0 = int(ln.crop_x0 + r.spans[m.start()][0]) - 4
            x1 = int(ln.crop_x0 + r.spans[m.end() - 1][1]) + 4
            out.append((i, Box(max(ln.box.x0, x0), ln.box.y0, min(ln.box.x1, x1), ln.box.y1), m.group(0), True))
    return out


def _in_column(cell: Box, hdr: Box) -> bool:
    """A cell under a header: left-aligned with it, or overlapping its widened x range by 30%."""
    h = max(hdr.h, 8)
    if abs(cell.x0 - hdr.x0) <= h:
        return True
    overlap = min(cell.x1, hdr.x1 + h) - max(cell.x0, hdr.x0 - h)
    return overlap >= 0.3 * max(cell.w, 1)


SURNAMES = set("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏"
               "吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万"
               "钱严覃武戴莫孔向汤常温康施牛樊葛邢齐易乔伍庞颜倪庄聂章鲁岳翟殷詹欧耿焦俞左柳甘祝包宁符舒阮"
               "柯纪梅童凌毕季裴霍涂苗谷盛翁冉骆蓝游辛靳管柴蒙鲍喻祁蒲滕屈饶牟艾尤穆农卓缪褚娄窦戚岑党宫"
               "费卜冷晏卫柏宗瞿桂佟臧闵苟邬卞姬仇栾隋刁巫寇桑郎甄丛仲虞敖巩佘麻苑迟邝")
COMPOUND = ("上官", "欧阳", "诸葛", "司马", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙", "宇文", "司徒",
            "夏侯", "公孙", "歐陽", "諸葛", "司馬", "長孫")
# traditional forms OCR returns for simplified surnames (黄 read as 黃)
SURNAMES |= set("黃陳張劉楊趙吳孫馬鄭羅謝許韓馮鄧蕭葉蘇呂盧錢湯龍賀顧龔萬嚴莊聶魯嶽歐齊喬龐顏鍾譚陸範韋鄒閆"
                "薑蔣蔡餘杜魏丁任沈姚崔廖賈夏付方白孟熊秦邱江尹薛段雷侯史陶黎毛郝邵覃武戴莫孔向常溫康施樊葛邢"
                "易伍倪章殷詹耿焦俞左柳甘祝包寧符舒阮柯紀梅童凌畢季裴霍塗苗谷盛翁冉駱藍遊辛靳管柴蒙鮑喻祁蒲滕屈饒")
NAME_CELL = re.compile(r"[\u4e00-\u9fff]{2,4}")
SHORT_CJK = re.compile(r"[\u4e00-\u9fff]{1,4}")


def _person_name(text: str) -> bool:
    t = re.sub(r"^[\x00-\x7f\W]+", "", text.strip())
    if not NAME_CELL.fullmatch(t) or t in NOT_NAMES:
        return False
    return t[:2] in COMPOUND or (t[0] in SURNAMES and len(t) <= 3)


def _name_columns(lines: Sequence[Line], masked_whole: set[int], regions: list[Region],
                  width: int, height: int) -> None:
    cells = [i for i, ln in enumerate(lines)
             if i not in masked_whole and ln.reading is not None and _person_name(ln.reading.text)]
    by_col: dict[int, list[int]] = {}
    for i in cells:
        x = lines[i].box.x0
        key = next((k for k in by_col if abs(k - x) <= 6), x)
        by_col.setdefault(key, []).append(i)
    for key, members in by_col.items():
        if len(members) >= 3:
            # cells of that column between its names that OCR read short or odd ("刘" for "刘飞"):
            # one to four CJK characters in a name column are a name too
            top = min(lines[i].box.y0 for i in members)
            bottom = max(lines[i].box.y1 for i in members)
            step = max(lines[i].box.h for i in members) * 3
            for j, ln in enumerate(lines):
                r = ln.reading
                if j in members or j in masked_whole or r is None or abs(ln.box.x0 - key) > 6:
                    continue
                if not top <= ln.box.y0 <= bottom + step:
                    continue  # not above the first name: the header is there
                t = re.sub(r"^[\x00-\x7f\W]+", "", r.text.strip())
                if SHORT_CJK.fullmatch(t) and t not in NOT_NAMES and label_kind(t) is None:
                    members.append(j)
            for i in members:
                ln = lines[i]
                masked_whole.add(i)
                regions.append(Region(ln.box.pad(PAD_X, PAD_Y, width, height), "name",
                                      ln.reading.confidence if ln.reading else 0.0,
                                      ln.reading.text if ln.reading else ""))
