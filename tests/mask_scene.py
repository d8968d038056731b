"""A scripted seat screen for the masking tests (run as a subprocess under Xvfb).

Windows (real Qt widgets): a CRM window with a customer table that scrolls and a form whose
phone field the test fills by typing with xdotool; a notes window that is raised over it; a new
customer card that pops up. Every PII value is in PLANTED below; decoys stay readable.
Prints one JSON line ``{"ready": true, "field": [x, y], ...}`` when shown, then follows its
timeline (seconds after start) and exits at the end. ``--loop`` (bench/record_vs_ffmpeg.py): the
table scrolls a row every 0.4 s and the notes window comes and goes every 6 s until the end.
"""

from __future__ import annotations

import json
import random
import sys

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QApplication,
    QFormLayout,
    QLabel,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰", "吴霞", "徐明", "孙丽"]


def _luhn_complete(body: str) -> str:
    total = 0
    for k, ch in enumerate(reversed(body + "0")):
        d = int(ch)
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


_rng = random.Random(20240512)
MOBILES = [f"1{_rng.choice('3589')}{_rng.randrange(10**9):09d}" for _ in NAMES]
CARDS = [_luhn_complete("62" + "".join(_rng.choice("0123456789") for _ in range(_rng.choice((13, 14, 16)))))
         for _ in NAMES]
ID18 = "11010519491231002X"
EMAIL = "zhang.wei88@example.com"
TYPED = "13806139472"
CARD_MOBILE = "15947201836"
PLANTED = {"mobiles": MOBILES, "cards": CARDS, "id": ID18, "email": EMAIL, "typed": TYPED,
           "card_mobile": CARD_MOBILE, "names": NAMES}


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    app = QApplication(sys.argv[:1])
    app.setFont(QFont("Noto Sans CJK SC", 11))

    crm = QWidget()
    crm.setWindowTitle("CRM - 客户列表")
    crm.setGeometry(0, 0, 1000, 700)
    lay = QVBoxLayout(crm)
    form = QFormLayout()
    phone = QLineEdit()
    form.addRow(QLabel("手机号码："), phone)
    form.addRow(QLabel("工单号："), QLabel("GD20240512001"))
    lay.addLayout(form)
    table = QTableWidget(60, 5)
    table.setHorizontalHeaderLabels(["客户姓名", "手机号码", "银行卡号", "订单号", "金额"])
    for r in range(60):
        k = r % len(NAMES)
        for c, v in enumerate([NAMES[k], MOBILES[k], CARDS[k], f"DD2024{r:04d}88", f"{1000 + r * 37.5:,.2f}"]):
            table.setItem(r, c, QTableWidgetItem(v))
    table.setColumnWidth(2, 260)
    table.setColumnWidth(3, 180)
    lay.addWidget(table)
    crm.show()

    notes = QWidget()
    notes.setWindowTitle("Notes")
    notes.setGeometry(500, 300, 600, 300)
    nl = QVBoxLayout(notes)
    nl.addWidget(QLabel("备忘：回访时间 2024-05-12 17:30，工单 GD20240512001"))
    nl.addWidget(QLabel(f"客户来电，我叫周杰，手机 {MOBILES[8]}"))

    card = QWidget()
    card.setWindowTitle("来电弹屏")
    card.setGeometry(1100, 80, 600, 320)
    cl = QFormLayout(card)
    cl.addRow(QLabel("客户姓名："), QLabel("钱多多"))
    cl.addRow(QLabel("证件号码："), QLabel(ID18))
    cl.addRow(QLabel("来电号码："), QLabel(CARD_MOBILE))
    cl.addRow(QLabel("电子邮箱："), QLabel(EMAIL))
    cl.addRow(QLabel("通话ID："), QLabel("CALL-20240512-000123"))

    def at(t: float, fn) -> None:  # type: ignore[no-untyped-def]
        QTimer.singleShot(int(t * 1000), fn)

    if "--loop" in sys.argv:  # bench: a seat at work for the whole run, the same every time
        bar = table.verticalScrollBar()
        scroll = QTimer()
        scroll.timeout.connect(lambda: bar.setValue((bar.value() + 1) % (bar.maximum() + 1)))
        scroll.start(400)  # a row every 0.4 s: the agent reads down the list
        at(2.0, card.show)
        for t in range(6, int(seconds), 12):  # notes raised over the form, then back
            at(t, notes.show)
            at(t, notes.raise_)
            at(t + 6, crm.raise_)
            at(t + 6, notes.hide)
    else:
        for k in range(8):
            at(1.0 + 0.35 * k, lambda k=k: table.verticalScrollBar().setValue(3 * (k + 1)))
        at(seconds * 0.45, card.show)
        at(seconds * 0.6, notes.show)
        at(seconds * 0.6, notes.raise_)
        at(seconds * 0.8, crm.raise_)
        at(seconds * 0.8, notes.hide)
    at(seconds, app.quit)

    def ready() -> None:
        pos = phone.mapToGlobal(phone.rect().center())
        print(json.dumps({"ready": True, "field": [pos.x(), pos.y()]}), flush=True)

    QTimer.singleShot(300, ready)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
