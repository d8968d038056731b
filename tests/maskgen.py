"""Seeded generator of varied seat screens with pixel-exact ground truth, for masking recall on
layouts, fonts and themes the development corpus (tests/data/masking-corpus) does not have.

``screen(seed)`` draws one screen with PIL: a layout (call-history list, grid/table, form with
labels, chat), a Latin font for digits and ASCII (DejaVu Sans/Serif/Mono/Condensed, Noto Sans or
Serif CJK) and a CJK font for Chinese (Noto Sans/Serif CJK, regular or bold), a size of 11-16 px,
a light, dark or coloured theme, anti-aliasing on or off. Customer values come in many formats:
mobiles plain, ``177-9708-7420``, ``150 6373 3110``, ``+86 138 1234 5678``; landlines
``(0731) 3623024-540``; 18-digit IDs and bank cards whole or split by spaces/dashes; e-mails;
names after labels, under a name header or in a call list; addresses after a label. Non-customer
text: labels, product names (``稳健理财 R2 (中低风险)``), amounts (``¥ 50,000.00``), dates, times,
durations, order and ticket numbers, hotlines, buttons (``风险揭示书 Risk disclosure``).

Every drawn string is an :class:`Item` (``kind`` "pii" or "text") with its box and its ink in a
16-bit label map (a pixel belongs to an item where its glyphs cover at least ``INK_COVER`` of the
pixel). Scoring follows tests/test_mask_image.py: a value is hidden when every one of its ink
pixels lies in a masked region; a non-customer item is masked when any of its ink pixels does.
``tesseract_leaks`` reads the masked screen with Tesseract: a value is legible when a run of
``DIGIT_WINDOW`` of its digits (or a name, or an e-mail's local part) appears in the output.

Seeds 0-999 are for development; 1000 and up are held out (bench/masking.py --generated and
tests/test_mask_unseen.py measure on them).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HELD_OUT = 1000  # seeds from here on were never looked at while tuning
INK_COVER = 32   # of 255: a pixel is ink of an item when its glyphs cover at least 1/8 of it
DIGIT_WINDOW = 7

NOTO = "/usr/share/fonts/opentype/noto/"
DEJAVU = "/usr/share/fonts/truetype/dejavu/"
LATIN_FONTS = [(DEJAVU + "DejaVuSans.ttf", 0), (DEJAVU + "DejaVuSerif.ttf", 0), (DEJAVU + "DejaVuSansMono.ttf", 0),
               (DEJAVU + "DejaVuSansCondensed.ttf", 0), (DEJAVU + "DejaVuSerifCondensed.ttf", 0),
               (NOTO + "NotoSansCJK-Regular.ttc", 2), (NOTO + "NotoSerifCJK-Regular.ttc", 2),
               (DEJAVU + "DejaVuSans-Bold.ttf", 0)]
CJK_FONTS = [(NOTO + "NotoSansCJK-Regular.ttc", 2), (NOTO + "NotoSerifCJK-Regular.ttc", 2),
             (NOTO + "NotoSansCJK-Bold.ttc", 2)]
THEMES = {  # background, text, secondary text, header band, header text, accent band (selected row)
    "light": ((255, 255, 255), (20, 20, 20), (110, 110, 110), (240, 242, 245), (40, 40, 40), (232, 240, 254)),
    "paper": ((250, 248, 240), (50, 40, 30), (120, 110, 100), (230, 225, 210), (30, 30, 30), (240, 232, 210)),
    "dark": ((30, 30, 30), (225, 225, 225), (150, 150, 150), (45, 45, 48), (235, 235, 235), (38, 52, 70)),
    "navy": ((22, 27, 44), (200, 210, 230), (130, 140, 165), (35, 45, 75), (255, 255, 255), (30, 40, 66)),
    "blue": ((245, 248, 252), (25, 35, 55), (95, 105, 125), (40, 90, 170), (255, 255, 255), (220, 232, 250)),
}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力鹏飞宇浩然"
CITIES = [("湖南省", "长沙市", "岳麓区"), ("广东省", "深圳市", "南山区"), ("", "上海市", "徐汇区"),
          ("浙江省", "杭州市", "西湖区"), ("", "北京市", "朝阳区"), ("四川省", "成都市", "武侯区")]
ROADS = ["麓山南路", "科技园路", "漕溪北路", "文三路", "建国路", "人民南路"]
PRODUCTS = ["稳健理财 R2 (中低风险)", "鑫享添利 R3 (中风险)", "货币基金 A 类", "安心保 2024 版",
            "定期存款 3 年期", "结构性存款 R1 (低风险)", "信用卡分期 12 期"]
BUTTONS = ["风险揭示书 Risk disclosure", "确认 Confirm", "取消 Cancel", "保存", "下一步 Next", "打印回单",
           "查看详情", "录音回放 Replay"]


@dataclass(slots=True)
class Item:
    id: int
    text: str
    kind: str        # "pii" (a customer value: must be hidden) or "text" (must stay readable)
    cls: str         # mobile, landline, id18, bank_card, email, name, address, label, amount, ...
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    ink: int = 0


@dataclass(slots=True)
class Screen:
    seed: int
    layout: str
    style: dict[str, object]
    image: np.ndarray                      # BGR
    labels: np.ndarray                     # uint16 item id per ink pixel
    items: list[Item] = field(default_factory=list)


@lru_cache(maxsize=64)
def _font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


def _has_cjk(s: str) -> bool:
    return any("\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef" for c in s)


# --- values -------------------------------------------------------------------------------------
def _luhn_complete(body: str) -> str:
    for d in "0123456789":
        total = 0
        for k, ch in enumerate(reversed(body + d)):
            v = int(ch)
            if k % 2:
                v = v * 2 - 9 if v > 4 else v * 2
            total += v
        if total % 10 == 0:
            return body + d
    raise AssertionError


def _id18(rng: random.Random) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    region = rng.choice("1234568") + "".join(rng.choice("0123456789") for _ in range(5))
    born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(365 * 55))
    first = region + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    return first + "10X98765432"[sum(int(c) * w for c, w in zip(first, weights, strict=True)) % 11]


def _split(s: str, sizes: list[int], sep: str) -> str:
    out, k = [], 0
    for n in sizes:
        if k < len(s):
            out.append(s[k:k + n])
        k += n
    if k < len(s):
        out.append(s[k:])
    return sep.join(out)


def mobile(rng: random.Random) -> str:
    num = "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))
    fmt = rng.choice(["plain", "dash", "space", "intl", "intl_dash", "intl_plain", "paren"])
    if fmt == "plain":
        return num
    if fmt == "dash":
        return _split(num, [3, 4, 4], "-")
    if fmt == "space":
        return _split(num, [3, 4, 4], " ")
    if fmt == "intl":
        return "+86 " + _split(num, [3, 4, 4], " ")
    if fmt == "intl_dash":
        return "+86-" + _split(num, [3, 4, 4], "-")
    if fmt == "intl_plain":
        return "+86 " + num
    return "(+86) " + num


def landline(rng: random.Random) -> str:
    area = rng.choice(["010", "021", "020", "0731", "0755", "0571", "028", "0591"])
    n = 8 if len(area) == 3 else rng.choice((7, 8))
    local = rng.choice("23456789") + "".join(rng.choice("0123456789") for _ in range(n - 1))
    ext = f"{rng.randrange(10, 9999)}"
    return rng.choice([f"({area}) {local}-{ext}", f"{area}-{local}", f"({area}) {local}", f"{area}-{local}-{ext}",
                       f"{area} {local[:4]} {local[4:]}", f"({area}){local}"])


def id_number(rng: random.Random) -> str:
    num = _id18(rng)
    return rng.choice([num, _split(num, [6, 8, 4], " "), _split(num, [6, 4, 4, 4], " "),
                       _split(num, [4, 4, 4, 4, 2], " "), _split(num, [6, 8, 4], "-")])


def bank_card(rng: random.Random) -> str:
    n = rng.choice((16, 16, 19, 19, 17, 18))
    prefix = rng.choice(["6222", "6228", "6217", "6212", "4367", "5187", "6259"])
    num = _luhn_complete(prefix + "".join(rng.choice("0123456789") for _ in range(n - 1 - len(prefix))))
    return rng.choice([num, _split(num, [4] * 5, " "), _split(num, [4] * 5, " "), _split(num, [4] * 5, "-"),
                       _split(num, [6, 13], " ")])


def email(rng: random.Random) -> str:
    user = rng.choice(["zhang.wei", "lily", "wangfang", "chen_jing", "liu.yang", "hxm"]) + str(rng.randrange(10, 999))
    return f"{user}@{rng.choice(['163.com', 'qq.com', 'example.com.cn', 'gmail.com', 'sina.cn'])}"


def name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def address(rng: random.Random) -> str:
    prov, city, dist = rng.choice(CITIES)
    return f"{prov}{city}{dist}{rng.choice(ROADS)}{rng.randrange(1, 999)}号{rng.randrange(1, 30)}栋{rng.randrange(101, 2999)}室"


def amount(rng: random.Random) -> str:
    v = rng.choice([50000, 1000, 200000, 3500.5, 12888.88, 999.0]) * rng.choice((1, 2, 3))
    return rng.choice([f"¥ {v:,.2f}", f"¥{v:,.2f}", f"{v:,.2f} 元", f"CNY {v:,.2f}"])


def date(rng: random.Random) -> str:
    d = dt.datetime(2023, 1, 1) + dt.timedelta(minutes=rng.randrange(60 * 24 * 700))
    return rng.choice([f"{d:%Y-%m-%d %H:%M}", f"{d:%Y-%m-%d}", f"{d:%m-%d %H:%M}", f"{d:%Y/%m/%d %H:%M:%S}",
                       f"{d:%Y年%m月%d日}", f"{d:%H:%M}"])


def decoy_number(rng: random.Random) -> str:
    d = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randrange(700))
    return rng.choice([f"SO-{d:%Y%m%d}-{rng.randrange(10**5):05d}", f"DD{d:%Y%m%d}{rng.randrange(10**6):06d}",
                       f"GD{d:%Y%m%d}{rng.randrange(1000):03d}", f"工号 {rng.randrange(1000, 99999)}",
                       "400-820-8820", "95588", f"No. {rng.randrange(10**5, 10**7)}", f"v{rng.randrange(1, 9)}.2.1",
                       f"排队 {rng.randrange(0, 90)} 人", f"JD{rng.randrange(10**11, 10**13)}"])


# --- drawing ------------------------------------------------------------------------------------
class Canvas:
    def __init__(self, seed: int, w: int, h: int, style: dict[str, object]) -> None:
        self.seed = seed
        self.style = style
        theme = THEMES[str(style["theme"])]
        self.bg, self.fg, self.fg2, self.band, self.band_fg, self.accent = theme
        self.img = Image.new("RGB", (w, h), self.bg)
        self.draw = ImageDraw.Draw(self.img)
        self.labels = np.zeros((h, w), np.uint16)
        self.items: list[Item] = []
        self.aa = bool(style["aa"])
        self.size = int(style["size"])  # type: ignore[call-overload]
        self.latin = style["latin"]
        self.cjk = style["cjk"]
        self.draw.fontmode = "L" if self.aa else "1"

    def font(self, text: str, size: int | None = None) -> ImageFont.FreeTypeFont:
        path, idx = self.cjk if _has_cjk(text) or "¥" in text else self.latin  # type: ignore[misc]
        return _font(path, idx, size or self.size)

    def width(self, text: str, size: int | None = None) -> int:
        return int(self.font(text, size).getlength(text) + 0.999)

    def text(self, x: int, y: int, text: str, kind: str = "text", cls: str = "text", color: tuple[int, int, int] | None = None,
             size: int | None = None) -> int:
        """Draw ``text`` with its top at ``y``; returns the x after it."""
        if not text:
            return x
        font = self.font(text, size)
        color = color or self.fg
        asc = font.getmetrics()[0]
        base = y + asc
        self.draw.text((x, base), text, font=font, fill=color, anchor="ls")
        layer = Image.new("L", self.img.size, 0)
        ld = ImageDraw.Draw(layer)
        ld.fontmode = self.draw.fontmode
        ld.text((x, base), text, font=font, fill=255, anchor="ls")
        arr = np.asarray(layer)
        ink = arr >= INK_COVER
        item = Item(len(self.items) + 1, text, kind, cls)
        ys, xs = np.nonzero(ink)
        if len(xs):
            item.box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            item.ink = int(ink.sum())
            self.labels[ink] = item.id
        self.items.append(item)
        return x + self.width(text, size)

    def parts(self, x: int, y: int, parts: list[tuple[str, str, str]], color: tuple[int, int, int] | None = None) -> int:
        for text, kind, cls in parts:
            x = self.text(x, y, text, kind, cls, color)
        return x

    def rect(self, box: tuple[int, int, int, int], fill: tuple[int, int, int] | None = None,
             outline: tuple[int, int, int] | None = None) -> None:
        self.draw.rectangle(box, fill=fill, outline=outline)

    def hline(self, x0: int, x1: int, y: int) -> None:
        c = tuple((a + b) // 2 for a, b in zip(self.bg, self.fg2, strict=True))
        self.draw.line((x0, y, x1, y), fill=c)

    def screen(self, layout: str) -> Screen:
        bgr = cv2.cvtColor(np.asarray(self.img), cv2.COLOR_RGB2BGR)
        return Screen(self.seed, layout, self.style, bgr, self.labels, self.items)


def _customer_value(rng: random.Random) -> tuple[str, str, str]:
    """(label, value, cls) of one labelled customer field."""
    kind = rng.choice(["mobile", "mobile", "landline", "id18", "bank_card", "email", "name", "address"])
    label = {"mobile": rng.choice(["手机号码", "联系电话", "手机", "来电号码", "Mobile"]),
             "landline": rng.choice(["固定电话", "座机", "办公电话", "联系电话"]),
             "id18": rng.choice(["证件号码", "身份证号", "证件号"]),
             "bank_card": rng.choice(["银行卡号", "卡号", "扣款账户"]),
             "email": rng.choice(["电子邮箱", "邮箱", "E-mail"]),
             "name": rng.choice(["客户姓名", "姓名", "联系人", "持卡人"]),
             "address": rng.choice(["联系地址", "地址", "住址"])}[kind]
    value = {"mobile": mobile, "landline": landline, "id18": id_number, "bank_card": bank_card, "email": email,
             "name": name, "address": address}[kind](rng)
    return label, value, kind


def _chrome(c: Canvas, rng: random.Random, title: str) -> int:
    """Title band, agent info, buttons; returns the y where the content starts."""
    w = c.img.size[0]
    bh = c.size + 16
    c.rect((0, 0, w, bh), fill=c.band)
    c.text(12, 8, title, cls="title", color=c.band_fg)
    x = w - 12 - c.width(f"工号 {rng.randrange(1000, 9999)}")
    c.text(x, 8, f"工号 {rng.randrange(1000, 9999)}", cls="emp_id", color=c.band_fg)
    y = bh + 10
    x = 12
    for b in rng.sample(BUTTONS, 3):
        bw = c.width(b) + 16
        c.rect((x, y, x + bw, y + c.size + 10), outline=c.fg2)
        c.text(x + 8, y + 5, b, cls="button")
        x += bw + 10
    c.text(x + 10, y + 5, rng.choice(PRODUCTS), cls="product", color=c.fg2)
    return y + c.size + 24


def call_list(c: Canvas, rng: random.Random) -> None:
    y = _chrome(c, rng, rng.choice(["通话记录 Call history", "最近通话", "来电记录"]))
    w, h = c.img.size
    two_line = rng.random() < 0.6
    row_h = (2 * c.size + 18) if two_line else (c.size + 16)
    col = [16, int(w * 0.3), int(w * 0.55), int(w * 0.75)]
    while y + row_h < h - 10:
        if rng.random() < 0.25:
            c.rect((0, y, w, y + row_h - 1), fill=c.accent)
        num = mobile(rng) if rng.random() < 0.8 else landline(rng)
        who = name(rng) if rng.random() < 0.6 else ""
        ncls = "mobile" if num.startswith(("1", "+")) and "(0" not in num else "landline"
        if two_line:
            if who:
                c.text(col[0], y + 5, who, "pii", "name")
            else:
                c.text(col[0], y + 5, rng.choice(["未知号码", "陌生来电", "骚扰电话"]), cls="text")
            c.text(col[0], y + c.size + 11, num, "pii", ncls, color=c.fg2, size=max(11, c.size - 1))
            c.text(col[2], y + 5, date(rng), cls="date", color=c.fg2)
            c.text(col[2], y + c.size + 11, rng.choice(["呼入", "呼出", "未接", "已挂断"]), cls="text", color=c.fg2)
        else:
            c.text(col[0], y + 7, num, "pii", ncls)
            if who:
                c.text(col[1], y + 7, who, "pii", "name")
            c.text(col[2], y + 7, date(rng), cls="date", color=c.fg2)
        dur = f"{rng.randrange(0, 59):02d}:{rng.randrange(0, 59):02d}"
        c.text(col[3], y + 7, rng.choice([dur, f"时长 {dur}", amount(rng)]), cls="duration", color=c.fg2)
        c.hline(0, w, y + row_h - 1)
        y += row_h


def grid(c: Canvas, rng: random.Random) -> None:
    y = _chrome(c, rng, rng.choice(["客户列表", "签约明细 Contracts", "理财客户查询"]))
    w, h = c.img.size
    cols = [("序号", "seq"), (rng.choice(["客户姓名", "姓名", "客户"]), "name"),
            (rng.choice(["手机号码", "联系电话", "电话"]), "mobile")]
    extra = rng.sample([("证件号码", "id18"), ("银行卡号", "bank_card"), ("产品名称", "product"),
                        ("金额", "amount"), ("签约日期", "date"), ("订单号", "order")], 3)
    cols += extra
    widths = {"seq": 4, "name": 6, "mobile": 13, "id18": 15, "bank_card": 17, "product": 13, "amount": 10,
              "date": 11, "order": 13}
    unit = c.size * 0.75
    xs, x = [], 12
    for _, k in cols:
        xs.append(x)
        x += int(widths[k] * unit * 1.6) + 12
    lines = rng.random() < 0.5
    row_h = c.size + rng.choice((10, 14, 18))
    c.rect((0, y, w, y + row_h), fill=c.band)
    for (hdr, _), x in zip(cols, xs, strict=True):
        if x < w - 40:
            c.text(x + 4, y + (row_h - c.size) // 2, hdr, cls="label", color=c.band_fg)
    y += row_h
    r = 1
    while y + row_h < h - 8:
        if r % 2 == 0 and rng.random() < 0.7:
            c.rect((0, y, w, y + row_h - 1), fill=c.accent)
        gen = {"seq": lambda r=r: (str(r), "text", "seq"), "name": lambda: (name(rng), "pii", "name"),
               "mobile": lambda: (mobile(rng), "pii", "mobile") if rng.random() < 0.85 else (landline(rng), "pii", "landline"),
               "id18": lambda: (id_number(rng), "pii", "id18"), "bank_card": lambda: (bank_card(rng), "pii", "bank_card"),
               "product": lambda: (rng.choice(PRODUCTS), "text", "product"), "amount": lambda: (amount(rng), "text", "amount"),
               "date": lambda: (date(rng)[:10], "text", "date"), "order": lambda: (decoy_number(rng), "text", "order")}
        for (_, k), x in zip(cols, xs, strict=True):
            text, kind, cls = gen[k]()
            if x + c.width(text) > w - 4:
                continue
            c.text(x + 4, y + (row_h - c.size) // 2, text, kind, cls)
        if lines:
            c.hline(0, w, y + row_h - 1)
        y += row_h
        r += 1


def form(c: Canvas, rng: random.Random) -> None:
    y0 = _chrome(c, rng, rng.choice(["客户信息 Customer", "开户资料", "理财签约 - 双录"]))
    w, h = c.img.size
    colon = rng.choice(["：", ":", "", "："])
    ncols = 2 if w > 900 else 1
    colw = (w - 24) // ncols
    row_h = c.size + rng.choice((14, 20, 26))
    label_w = c.width("身份证号码：") + rng.choice((8, 24))
    y = y0
    fields: list[tuple[str, str, str, str]] = []
    used: set[str] = set()
    while len(fields) < 40:
        if rng.random() < 0.6:
            lab, val, cls = _customer_value(rng)
            if cls in ("name",) and "name" in used:
                continue
            used.add(cls)
            fields.append((lab, val, "pii", cls))
        else:
            lab, val, cls = rng.choice([("产品名称", rng.choice(PRODUCTS), "product"), ("购买金额", amount(rng), "amount"),
                                        ("风险等级", rng.choice(["R2 中低风险", "R3 中风险", "C3 稳健型"]), "text"),
                                        ("签约日期", date(rng), "date"), ("业务编号", decoy_number(rng), "order"),
                                        ("客户经理", f"工号 {rng.randrange(1000, 99999)}", "emp_id"),
                                        ("服务热线", rng.choice(["95588", "400-820-8820", "95533"]), "hotline")])
            fields.append((lab, val, "text", cls))
    k = 0
    boxed = rng.random() < 0.5
    while y + row_h < h - 8 and k < len(fields):
        for ci in range(ncols):
            if k >= len(fields):
                break
            lab, val, kind, cls = fields[k]
            k += 1
            x = 12 + ci * colw
            if x + label_w + c.width(val) > x + colw - 8:
                continue
            c.text(x, y + (row_h - c.size) // 2, lab + colon, cls="label", color=c.fg2)
            if boxed:
                c.rect((x + label_w - 4, y + 3, x + colw - 16, y + row_h - 3), outline=c.fg2)
            c.text(x + label_w, y + (row_h - c.size) // 2, val, kind, cls)
        y += row_h


def chat(c: Canvas, rng: random.Random) -> None:
    y = _chrome(c, rng, rng.choice(["在线客服", "会话 Chat", "企业微信 - 客户会话"]))
    w, h = c.img.size
    templates = [
        ("您好，我的手机号是 ", "mobile", "，麻烦帮我查一下"),
        ("电话 ", "mobile", " 随时可以联系"),
        ("座机 ", "landline", " 工作日有人"),
        ("卡号 ", "bank_card", " 扣款失败了"),
        ("身份证 ", "id18", "，请核实"),
        ("我叫", "name", "，上周买过理财"),
        ("邮箱：", "email", ""),
        ("地址：", "address", ""),
        ("回拨 ", "mobile", ""),
    ]
    plain = ["好的，已为您登记 {p}", "本次购买 {a}，起息日 {d}", "请阅读 风险揭示书 Risk disclosure 后签字",
             "订单 {o} 已受理", "客服热线 95588，工作时间 9:00-18:00", "收到，谢谢", "产品：{p}，金额 {a}"]
    while y + 2 * c.size + 20 < h - 8:
        mine = rng.random() < 0.5
        who = rng.choice(["客户", "访客 0231"]) if not mine else f"坐席 {rng.randrange(1000, 9999)}"
        c.text(16 if not mine else w // 2, y, who + "  " + date(rng)[-5:], cls="meta", color=c.fg2,
               size=max(11, c.size - 2))
        y += c.size + 10
        x0 = 24 if not mine else w // 2 + 8
        if rng.random() < (0.85 if not mine else 0.3):
            pre, cls, post = rng.choice(templates)
            val = {"mobile": mobile, "landline": landline, "bank_card": bank_card, "id18": id_number, "name": name,
                   "email": email, "address": address}[cls](rng)
            parts = [(pre, "text", "text"), (val, "pii", cls), (post, "text", "text")]
        else:
            msg = rng.choice(plain).format(p=rng.choice(PRODUCTS), a=amount(rng), d=date(rng)[:10], o=decoy_number(rng))
            parts = [(msg, "text", "chat")]
        tw = sum(c.width(t) for t, _, _ in parts)
        bubble = tuple((4 * a + b) // 5 for a, b in zip(c.bg, c.band, strict=True))  # readable under c.fg
        c.rect((x0 - 8, y - 4, x0 + tw + 8, y + c.size + 8), fill=c.accent if mine else bubble)
        c.parts(x0, y, parts)
        y += c.size + 16


LAYOUTS = {"call_list": call_list, "grid": grid, "form": form, "chat": chat}


def screen(seed: int) -> Screen:
    rng = random.Random(seed * 7919 + 17)
    layout = rng.choice(sorted(LAYOUTS))
    style: dict[str, object] = {
        "theme": rng.choice(sorted(THEMES)), "size": rng.randint(11, 16), "aa": rng.random() < 0.5,
        "latin": rng.choice(LATIN_FONTS), "cjk": rng.choice(CJK_FONTS)}
    w, h = rng.choice([(1024, 640), (960, 600), (1280, 720)])
    c = Canvas(seed, w, h, style)
    LAYOUTS[layout](c, rng)
    return c.screen(layout)


# --- scoring ------------------------------------------------------------------------------------
def region_mask(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def score(scr: Screen, masked: np.ndarray) -> dict[str, object]:
    """Ink-pixel score: values not fully hidden, non-customer items touched (by item and area)."""
    ink = np.bincount(scr.labels.ravel(), minlength=len(scr.items) + 1)
    hit = np.bincount(scr.labels[masked].ravel(), minlength=len(scr.items) + 1)
    pii = [i for i in scr.items if i.kind == "pii" and i.ink]
    text = [i for i in scr.items if i.kind == "text" and i.ink]
    leaks = [i for i in pii if hit[i.id] < ink[i.id]]
    touched = [i for i in text if hit[i.id] > 0]
    return {"pii": len(pii), "leaks": leaks, "text": len(text), "text_masked": touched,
            "text_ink": int(sum(ink[i.id] for i in text)), "text_ink_masked": int(sum(hit[i.id] for i in text))}


def tesseract_text(img: np.ndarray, psm: int = 11, langs: str = "eng+chi_sim") -> str:
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    ok, png = cv2.imencode(".png", big)
    proc = subprocess.run(["tesseract", "stdin", "stdout", "-l", langs, "--psm", str(psm)], input=png.tobytes(),
                          capture_output=True, timeout=300, check=False, env=dict(os.environ, OMP_THREAD_LIMIT="1"))
    return proc.stdout.decode("utf-8", "replace")


def legible(text: str, items: list[Item]) -> list[Item]:
    """Values whose digits (a run of DIGIT_WINDOW), name or e-mail local part are in ``text``."""
    runs = [re.sub(r"\D", "", r) for r in re.findall(r"\d[\d \-()+]*\d", text)]
    flat = re.sub(r"\s", "", text)
    out = []
    for it in items:
        if it.kind != "pii":
            continue
        digits = re.sub(r"\D", "", it.text)
        if len(digits) >= DIGIT_WINDOW:
            if any(digits[k:k + DIGIT_WINDOW] in r for r in runs for k in range(len(digits) - DIGIT_WINDOW + 1)):
                out.append(it)
        elif it.cls == "email":
            if it.text.split("@")[0] in flat:
                out.append(it)
        elif it.cls == "name" and len(it.text) >= 2 and it.text in flat:
            out.append(it)
    return out


def tesseract_leaks(scr: Screen, masked_img: np.ndarray) -> list[Item]:
    """Values Tesseract reads off the masked screen (sparse text mode, then block mode)."""
    found: dict[int, Item] = {}
    for psm in (11, 6):
        for it in legible(tesseract_text(masked_img, psm), scr.items):
            found[it.id] = it
    return list(found.values())
