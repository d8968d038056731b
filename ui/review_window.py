"""Review mode: the session catalog, the verdict of an opened session, and the player.

Work that touches storage or decodes media (refresh, open + verify, QC) runs in worker threads;
results come back to the UI thread through the queued signals of :class:`ReviewWindow`.
Opening a session always verifies it first and shows the verdict per segment; segments that
failed verification are refused by the player (shown as a gap with the reason), never played
as if intact.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from station import logs
from station.errors import UsageError
from station.review import qc as qcmod
from station.review.catalog import SORT_COLUMNS, Catalog, Filter, SessionRow
from station.review.env import ReviewSetup
from station.review.session import ReviewSession
from ui.player_widget import PlayerWidget
from ui.qt import (
    QAbstractItemView,
    QAbstractTableModel,
    QColor,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QModelIndex,
    QPushButton,
    QSplitter,
    Qt,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    Signal,
)

log = logs.get("ui")

ZH: dict[str, str] = {
    "Session": "会话", "Start (UTC)": "开始 (UTC)", "Station": "坐席", "Agent": "业务员", "Duration": "时长",
    "Segs": "分段", "Integrity": "完整性", "QC flags": "质检标记", "Segment": "分段", "Status": "状态",
    "Details": "详情", "Refresh": "刷新", "Open": "打开", "DualRec — Review": "双录 — 复核",
    "Open a session to verify and play it.": "打开会话以校验并播放。",
    "search id / station / agent": "搜索 会话/坐席/业务员", "from YYYY-MM-DD": "起 YYYY-MM-DD",
    "to YYYY-MM-DD": "止 YYYY-MM-DD", "station": "坐席", "agent": "业务员", "any QC": "全部质检",
    "flagged": "有质检标记", "any steps": "全部步骤", "step missing": "缺少步骤",
    "any integrity": "全部完整性",
    "intact": "完整", "RECOVERED": "崩溃后恢复 RECOVERED", "recovered": "已恢复",
    "unverified": "未校验", "incomplete": "未完成", "sessions": "个会话", "of": "/",
    "▶ Play": "▶ 播放", "❚❚ Pause": "❚❚ 暂停", "Speed": "倍速", "Export…": "导出…",
    "INTACT": "完整 INTACT", "NOT INTACT": "不完整 NOT INTACT",
    # masking overlay (player) and the timeline's rows
    "show masking": "显示遮挡", "mobile number": "手机号", "landline number": "固定电话",
    "ID number": "身份证号", "bank card number": "银行卡号", "labelled value": "标注字段值",
    "possible number": "疑似号码", "name": "姓名", "address": "地址", "email address": "电子邮箱",
    "window rule": "窗口规则", "analysis error: whole frame": "分析出错：整帧遮挡",
    "clipped line (masked whole)": "截断行（整行遮挡）", "unreadable line (masked whole)": "无法识别的行（整行遮挡）",
    "not yet read (evidence gap)": "尚未识别（证据缺口）", "not yet read": "尚未识别",
    "segments": "分段", "markers": "标记", "op-log": "操作日志", "pauses": "暂停", "masked": "遮挡",
    # export (the texts of the export itself, its warnings and parts left out, stay as
    # `station export` writes them: English, like export.json and the audit log)
    "Exporting {session} to {out}…": "正在导出 {session} 到 {out}…",
    "Exported {session} to {out}.": "已导出 {session} 到 {out}。",
    "Exported {session} to {out} with {n} warning(s):": "已导出 {session} 到 {out}，有 {n} 条警告：",
    "{n} part(s) left out (not exported):": "{n} 个部分未导出：",
    "Check the folder: sha256sum -c SHA256SUMS; python3 evidence/check_evidence.py (README.txt).":
        "核验：sha256sum -c SHA256SUMS；python3 evidence/check_evidence.py（见 README.txt）。",
    "exported to {out}": "已导出到 {out}",
    "exported to {out} with {n} warning(s) and {m} part(s) left out: see the export panel":
        "已导出到 {out}，有 {n} 条警告、{m} 个部分未导出：见导出信息",
    "WARNING": "警告 WARNING", "LEFT OUT": "未导出 LEFT OUT", "note": "说明",
    "Export failed: {error}": "导出失败：{error}",
    "Unfinished files were removed; the export-failed audit record lists what remains in {out}.":
        "未完成的文件已删除；审计记录 export-failed 列出了 {out} 中保留的文件。",
    "export failed: {error}": "导出失败：{error}",
    "Export an incomplete session?": "导出未完成的会话？",
    "Session {session} has no session.json: it is still being recorded or uploaded, or the "
    "station crashed and it was not recovered, so nothing signed says where it ends (segments "
    "at its end may be missing unnoticed). Export it anyway? The export and its audit record "
    "will say it is incomplete.":
        "会话 {session} 没有 session.json：仍在录制或上传中，或工作站崩溃后尚未恢复，没有签名记录说明"
        "会话在何处结束（末尾的分段可能缺失而无法察觉）。仍要导出吗？导出结果和审计记录都会注明会话不完整。",
    "export cancelled: session {session} has no session.json and exporting it incomplete was "
    "not confirmed; nothing was exported":
        "已取消导出：会话 {session} 没有 session.json，未确认导出不完整的会话；未导出任何内容",
}
_LANG = {"value": "en"}


def tr(text: str) -> str:
    """Simplified Chinese for the review window's fixed labels (English stays the fallback)."""
    return ZH.get(text, text) if _LANG["value"] == "zh_CN" else text


def trf(text: str, **values: Any) -> str:
    """:func:`tr`, then ``str.format`` with ``values``."""
    return tr(text).format(**values)


def set_language(language: str) -> None:
    if language == "auto":
        from ui.i18n import system_language

        language = system_language()
    _LANG["value"] = "zh_CN" if language == "zh_CN" else "en"


COLUMNS = (("id", "Session"), ("start", "Start (UTC)"), ("station", "Station"), ("agent", "Agent"),
           ("duration", "Duration"), ("segments", "Segs"), ("verdict", "Integrity"), ("flags", "QC flags"))


def export_summary(result: dict[str, Any]) -> tuple[list[str], bool]:
    """(lines for the window, whether anything needs the reviewer's attention) of a
    ``station export`` result: every warning (a session.mkv not joined comes first), every part
    left out with the reason, the notes, and how to check the pack."""
    warnings = list(result.get("warnings") or [])
    skipped = list(result.get("skipped") or [])
    sid, out = result.get("session", "?"), result.get("out", "?")
    if warnings or skipped:
        lines = [trf("Exported {session} to {out} with {n} warning(s):", session=sid, out=out,
                     n=len(warnings))]
    else:
        lines = [trf("Exported {session} to {out}.", session=sid, out=out)]
    lines += [f"{tr('WARNING')}: {w}" for w in warnings]
    if skipped:
        lines.append(f"{tr('LEFT OUT')}: " + trf("{n} part(s) left out (not exported):", n=len(skipped)))
        for s in skipped:
            what = f"segment {s.get('seq')}" + (f" {s['kind']} ({s.get('file')})" if s.get("kind")
                                                else " (all files)")
            lines.append(f"  - {what}: {s.get('why')}")
    lines += [f"{tr('note')}: {n}" for n in result.get("notes") or []]
    if result.get("sha256sums"):
        lines.append(tr("Check the folder: sha256sum -c SHA256SUMS; python3 "
                        "evidence/check_evidence.py (README.txt)."))
    return lines, bool(warnings or skipped)


class CatalogModel(QAbstractTableModel):
    """Rows of the catalog for a QTableView; sorting re-queries SQLite."""

    def __init__(self, catalog: Catalog, parent: Any = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.rows: list[SessionRow] = []
        self.filter = Filter()
        self.sort_key, self.descending = "start", True

    def reload(self) -> None:
        self.beginResetModel()
        self.rows = self.catalog.query(self.filter, self.sort_key, self.descending)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # type: ignore[override]  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # type: ignore[override]  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Any, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return tr(COLUMNS[section][1])
        return None

    def data(self, index: QModelIndex, role: int = 0) -> Any:  # type: ignore[override]
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        key = COLUMNS[index.column()][0]
        if role == Qt.ItemDataRole.DisplayRole:
            if key == "id":
                return row.session_id
            if key == "start":
                return row.start_utc.replace("T", " ").replace("Z", "")
            if key == "duration":
                m, s = divmod(int(row.duration_s), 60)
                return f"{m}:{s:02d}"
            if key == "flags":
                return ", ".join(row.qc_flags) if row.qc_flags else ("—" if row.qc_state != "none" else "…")
            return str(getattr(row, {"verdict": "verdict", "segments": "segments"}.get(key, key)))
        if role == Qt.ItemDataRole.ForegroundRole:
            if key == "verdict":
                if row.verdict == "intact":
                    return QColor("#2e7d32")
                if row.verdict == "recovered":
                    return QColor("#e65100")
                if row.verdict not in ("unverified",):
                    return QColor("#c62828")
            if key == "flags" and row.qc_flags:
                return QColor("#e65100")
        if role == Qt.ItemDataRole.ToolTipRole and key == "verdict":
            return row.verdict_detail or row.verdict
        return None

    def sort(self, column: int, order: Any = Qt.SortOrder.AscendingOrder) -> None:
        key = COLUMNS[column][0]
        if key in SORT_COLUMNS:
            self.sort_key = key
            self.descending = order == Qt.SortOrder.DescendingOrder
            self.reload()


class FilterBar(QWidget):
    """Filters of the catalog.

    Signals:
        changed: a filter changed. arg: the new Filter.
    """

    changed = Signal(object)

    def __init__(self, steps: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.date_from = QLineEdit(placeholderText=tr("from YYYY-MM-DD"))
        self.date_to = QLineEdit(placeholderText=tr("to YYYY-MM-DD"))
        self.station = QLineEdit(placeholderText=tr("station"))
        self.agent = QLineEdit(placeholderText=tr("agent"))
        self.text = QLineEdit(placeholderText=tr("search id / station / agent"))
        self.min_minutes = QDoubleSpinBox(minimum=0, maximum=1440, decimals=1, suffix=" min ≥")
        self.flag = QComboBox()
        self.flag.addItem(tr("any QC"), None)
        self.flag.addItem(tr("flagged"), "any")
        for f in qcmod.ALL_FLAGS:
            self.flag.addItem(f, f)
        self.step = QComboBox()
        self.step.addItem(tr("any steps"), None)
        self.step.addItem(tr("step missing"), "any")
        for s in steps:
            self.step.addItem(f"missing: {s}", s)
        self.verdict = QComboBox()
        for label, value in (("any integrity", None), ("intact", "intact"), ("recovered", "recovered"),
                             ("unverified", "unverified"), ("incomplete", "incomplete")):
            self.verdict.addItem(tr(label), value)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        for w in (self.text, self.date_from, self.date_to, self.station, self.agent, self.min_minutes,
                  self.flag, self.step, self.verdict):
            lay.addWidget(w)
            if isinstance(w, QDoubleSpinBox):
                w.valueChanged.connect(self._emit)
            elif isinstance(w, QComboBox):
                w.currentIndexChanged.connect(self._emit)
            else:
                w.editingFinished.connect(self._emit)

    def current(self) -> Filter:
        def txt(w: QLineEdit) -> str | None:
            return w.text().strip() or None

        return Filter(date_from=txt(self.date_from), date_to=txt(self.date_to), station=txt(self.station),
                      agent=txt(self.agent), text=txt(self.text),
                      min_duration_s=self.min_minutes.value() * 60 or None,
                      qc_flag=self.flag.currentData(), missing_step=self.step.currentData(),
                      verdict=self.verdict.currentData())

    def _emit(self, *_: Any) -> None:
        self.changed.emit(self.current())


class VerdictPanel(QWidget):
    """The verification verdict of the opened session, one row per segment."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.banner = QLabel(tr("Open a session to verify and play it."))
        self.banner.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels([tr("Segment"), tr("Status"), tr("Details")])
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMaximumHeight(150)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.banner)
        lay.addWidget(self.table)

    def show_report(self, report: dict[str, Any], refused: list[int]) -> None:
        if report["intact"]:
            self.banner.setText(f"✔ {tr('INTACT')} — session {report['session']}: every signature, the chain "
                                f"and all {len(report['segments'])} segment hashes verify.")
            self.banner.setStyleSheet("background:#e8f5e9; color:#1b5e20; padding:6px; font-weight:bold;")
        elif report.get("verdict") == "recovered":
            rec = report.get("recovery") or {}
            self.banner.setText(f"◐ {tr('RECOVERED')} — session {report['session']}: ended by a crash; "
                                f"complete and untampered up to {rec.get('until_utc')} "
                                f"({rec.get('kept_s')} s kept, at most {rec.get('lost_s_max')} s lost).")
            self.banner.setStyleSheet("background:#fff8e1; color:#e65100; padding:6px; font-weight:bold;")
        else:
            cats = ", ".join(c for c in report["categories"] if c != "ok")
            text = f"✖ {tr('NOT INTACT')} — session {report['session']}: {cats}."
            if refused:
                text += f" Segment(s) {', '.join(map(str, refused))} refused: not played."
            self.banner.setText(text)
            self.banner.setStyleSheet("background:#ffebee; color:#b71c1c; padding:6px; font-weight:bold;")
        segs = report["segments"]
        session_problems = [p for p in report["problems"] if p["seq"] is None]
        self.table.setRowCount(len(segs) + len(session_problems))
        for i, s in enumerate(segs):
            for j, text in enumerate((str(s["seq"]), s["status"], "; ".join(s["problems"]) or "ok")):
                item = QTableWidgetItem(text)
                if s["status"] != "ok":
                    item.setForeground(QColor("#c62828"))
                self.table.setItem(i, j, item)
        for k, p in enumerate(session_problems):
            for j, text in enumerate(("session", p["code"], p["detail"])):
                self.table.setItem(len(segs) + k, j, QTableWidgetItem(text))

    def segment_rows(self) -> list[tuple[str, str, str]]:
        return [tuple(self.table.item(r, c).text() for c in range(3))  # type: ignore[misc, union-attr]
                for r in range(self.table.rowCount())]


class ReviewWindow(QMainWindow):
    """Catalog, verdict and player in one window.

    Signals:
        refreshed: the catalog was refreshed. arg: counts dict.
        opened: a session was opened and verified. arg: the verifier's report.
        open_failed: opening failed or was refused. arg: message.
        qc_updated: a QC report was computed or loaded. arg: session id.
        exported: an export finished. arg: the result dict of ``station export`` (its
            ``warnings``, ``skipped`` and ``notes`` are also shown in ``export_status``).
        open_failed also reports a refused, cancelled or failed export ("export ...: why").

    Attributes tests (and kiosk deployments) may replace: ``ask_reason(prompt) -> str | None``,
    ``ask_export_dir() -> Path | None``, ``ask_confirm(prompt) -> bool`` (asked before a session
    without session.json is exported). ``export_status`` is the label that keeps the last
    export's outcome visible; ``export_lines`` its lines.
    """

    refreshed = Signal(dict)
    opened = Signal(dict)
    open_failed = Signal(str)
    qc_updated = Signal(str)
    exported = Signal(dict)
    _open_done = Signal(object, object)
    _refresh_done = Signal(object)
    _qc_done = Signal(str)
    _export_done = Signal(object, object)

    def __init__(self, setup: ReviewSetup, audio: bool = True, language: str = "en") -> None:
        super().__init__()
        set_language(language)
        self.setup = setup
        self.setWindowTitle(tr("DualRec — Review"))
        self.session: ReviewSession | None = None
        self.qc_report: qcmod.QcReport | None = None
        # dialogs are attributes so tests (and kiosk deployments) can replace them
        self.ask_reason: Callable[[str], str | None] = self._ask_reason_dialog
        self.ask_export_dir: Callable[[], Path | None] = self._ask_dir_dialog
        self.ask_confirm: Callable[[str], bool] = self._ask_confirm_dialog
        self.export_lines: list[str] = []
        self.model = CatalogModel(setup.catalog, self)
        self.filters = FilterBar(setup.thresholds.required_steps)
        self.filters.changed.connect(self.apply_filter)
        self.refresh_button = QPushButton(tr("Refresh"))
        self.refresh_button.clicked.connect(self.refresh)
        self.open_button = QPushButton(tr("Open"))
        self.open_button.clicked.connect(self.open_selected)
        self.count_label = QLabel("")
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicator(1, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.doubleClicked.connect(lambda _i: self.open_selected())
        top = QWidget()
        tl = QVBoxLayout(top)
        bar = QHBoxLayout()
        bar.addWidget(self.filters, 1)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.open_button)
        tl.addLayout(bar)
        tl.addWidget(self.table, 1)
        tl.addWidget(self.count_label)
        self.verdict = VerdictPanel()
        self.player = PlayerWidget(audio=audio)
        self.player.export_requested.connect(self.export_current)
        self.player.setEnabled(False)
        self.export_status = QLabel("")
        self.export_status.setWordWrap(True)
        self.export_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_status.setVisible(False)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.addWidget(self.verdict)
        bl.addWidget(self.export_status)
        bl.addWidget(self.player, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setSizes([300, 600])
        self.setCentralWidget(split)
        self.statusBar().showMessage(f"storage: {getattr(setup.store, 'describe', lambda: '?')()}")
        self._open_done.connect(self._on_open_done)
        self._refresh_done.connect(self._on_refresh_done)
        self._qc_done.connect(self._on_qc_done)
        self._export_done.connect(self._on_export_done)
        self._busy = False
        self._exporting = False
        self._qc_thread: threading.Thread | None = None
        self.model.reload()
        self._update_count()

    # --- catalog -------------------------------------------------------------------------------
    def apply_filter(self, flt: Filter) -> None:
        self.model.filter = flt
        self.model.reload()
        self._update_count()

    def _fit_columns(self) -> None:
        if len(self.model.rows) <= 2000:   # fitting reads every row: skip it for big catalogs
            self.table.resizeColumnsToContents()
        else:
            self.table.setColumnWidth(0, 220)

    def _update_count(self) -> None:
        total = self.setup.catalog.count()
        self.count_label.setText(f"{len(self.model.rows)} {tr('of')} {total} {tr('sessions')}")

    def refresh(self) -> None:
        self.refresh_button.setEnabled(False)
        self.statusBar().showMessage("refreshing the catalog…")

        def work() -> None:
            try:
                counts: Any = self.setup.catalog.refresh()
                self.setup.catalog.load_qc_reports(self.setup.identities)
            except Exception as exc:
                counts = exc
            self._refresh_done.emit(counts)

        threading.Thread(target=work, name="catalog-refresh", daemon=True).start()

    def _on_refresh_done(self, counts: Any) -> None:
        self.refresh_button.setEnabled(True)
        if isinstance(counts, Exception):
            self.statusBar().showMessage(f"refresh failed: {counts}")
            return
        self.model.reload()
        self._update_count()
        self._fit_columns()
        self.statusBar().showMessage(f"catalog: {counts['total']} sessions ({counts['added']} new)")
        self.refreshed.emit(counts)
        if self.setup.compute_qc:
            self.compute_missing_qc()

    def compute_missing_qc(self) -> None:
        """Compute QC once for sessions that have none stored (worker thread, one at a time)."""
        if self._qc_thread is not None and self._qc_thread.is_alive():
            return
        todo = [r for r in self.setup.catalog.needing_qc() if not r.has_qc_object]
        if not todo:
            return

        def work() -> None:
            for row in todo:
                try:
                    rs = self._session_for(row)
                    rs.verify()
                    self.setup.catalog.set_verdict(row.session_id, rs.verdict(),
                                                   "; ".join(p["detail"] for p in
                                                             (rs.report or {}).get("problems", [])[:5]))
                    report = qcmod.analyse_session(rs, self.setup.thresholds)
                    recips = rs.recipients(self.setup.recipients)
                    if recips:
                        qcmod.store_qc(rs, report, recips, self.setup.tmp_dir or Path(tempfile.gettempdir()))
                    self.setup.catalog.set_qc(row.session_id, report.flags, report.steps["missing"],
                                              state="computed")
                except Exception as exc:
                    log.warning("QC of %s failed: %s", row.session_id, exc)
                    self.setup.catalog.set_qc(row.session_id, [], [], state="error")
                self._qc_done.emit(row.session_id)

        self._qc_thread = threading.Thread(target=work, name="qc", daemon=True)
        self._qc_thread.start()

    def _on_qc_done(self, session_id: str) -> None:
        self.model.reload()
        self._fit_columns()
        self.qc_updated.emit(session_id)

    def selected_row(self) -> SessionRow | None:
        idx = self.table.selectionModel().selectedRows()
        if not idx:
            return None
        return self.model.rows[idx[0].row()]

    def select_session(self, session_id: str) -> bool:
        for i, r in enumerate(self.model.rows):
            if r.session_id == session_id:
                self.table.selectRow(i)
                return True
        return False

    # --- opening -------------------------------------------------------------------------------
    def _session_for(self, row: SessionRow) -> ReviewSession:
        s = self.setup
        return ReviewSession(s.store, row.folder, s.identities, s.trusted, s.audit, row.session_id)

    def open_selected(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.open_session(row)

    def open_session(self, row: SessionRow, reason: str | None = None) -> None:
        if self._busy:
            return
        if reason is None and self.setup.require_open_reason:
            reason = self.ask_reason(f"Reason to open session {row.session_id}")
            if not reason:
                self.open_failed.emit("a reason is required to open a session")
                return
        self._busy = True
        self.player.unload()
        self.player.setEnabled(False)
        self.verdict.banner.setText(f"Verifying {row.session_id}…")
        self.verdict.banner.setStyleSheet("")
        rs = self._session_for(row)

        def work() -> None:
            try:
                report = rs.open(reason)
                player = None
                try:
                    player = rs.player(reason)
                    player.frame_at("screen", 0.0)      # decode the first frame off the UI thread
                    player.frame_at("camera", 0.0)
                except Exception as exc:
                    report = dict(report, play_error=str(exc))
                timeline = rs.timeline(self._load_qc(rs))
                self._open_done.emit((rs, report, timeline), player)
            except Exception as exc:
                self._open_done.emit(exc, None)

        threading.Thread(target=work, name="open-session", daemon=True).start()

    def _load_qc(self, rs: ReviewSession) -> qcmod.QcReport | None:
        try:
            self.qc_report = qcmod.load_qc(self.setup.store, rs.folder, self.setup.identities)
        except Exception as exc:
            log.warning("QC report of %s unreadable: %s", rs.session_id, exc)
            self.qc_report = None
        return self.qc_report

    def _on_open_done(self, result: Any, player: Any) -> None:
        self._busy = False
        if isinstance(result, Exception):
            self.verdict.banner.setText(f"Not opened: {result}")
            self.verdict.banner.setStyleSheet("background:#ffebee; color:#b71c1c; padding:6px;")
            self.open_failed.emit(str(result))
            return
        rs, report, timeline = result
        self.session = rs
        self.setup.catalog.set_verdict(rs.session_id, rs.verdict(),
                                       "; ".join(p["detail"] for p in report["problems"][:5]))
        self.verdict.show_report(report, rs.refused_segments())
        if player is not None:
            self.player.load(player, timeline)
            self.player.setEnabled(True)
        elif report.get("play_error"):
            self.verdict.banner.setText(self.verdict.banner.text() + f" Not playable: {report['play_error']}")
        self.model.reload()
        self.opened.emit(report)

    # --- export --------------------------------------------------------------------------------
    def export_current(self) -> None:
        """Export… : reason, confirmation for a session without session.json, folder; then
        ``station export`` over the stored session in a worker thread (:meth:`_on_export_done`
        shows its warnings and left-out parts)."""
        rs = self.session
        if rs is None or self._exporting:
            return
        reason = self.ask_reason(f"Reason to export session {rs.session_id} (required)")
        if not reason or not reason.strip():
            self.statusBar().showMessage("export refused: an export needs a reason; nothing was exported")
            self.open_failed.emit("export refused: a reason is required")
            return
        allow_incomplete = False
        codes = {p.get("code") for p in (rs.report or {}).get("problems", [])}
        if "session-open" in codes:  # no session.json: only when the reviewer says so
            if not self._confirm_incomplete(rs):
                return
            allow_incomplete = True
        out = self.ask_export_dir()
        if out is None:
            return
        self._start_export(rs, Path(out), reason, allow_incomplete)

    def _confirm_incomplete(self, rs: ReviewSession) -> bool:
        if self.ask_confirm(trf(
                "Session {session} has no session.json: it is still being recorded or uploaded, or "
                "the station crashed and it was not recovered, so nothing signed says where it ends "
                "(segments at its end may be missing unnoticed). Export it anyway? The export and its "
                "audit record will say it is incomplete.", session=rs.session_id)):
            return True
        msg = trf("export cancelled: session {session} has no session.json and exporting it "
                  "incomplete was not confirmed; nothing was exported", session=rs.session_id)
        self.statusBar().showMessage(msg)
        self._show_export([msg], "error")
        self.open_failed.emit(msg)
        return False

    def _start_export(self, rs: ReviewSession, out: Path, reason: str, allow_incomplete: bool) -> None:
        self._exporting = True
        self.player.export_button.setEnabled(False)
        msg = trf("Exporting {session} to {out}…", session=rs.session_id, out=out)
        self.statusBar().showMessage(msg)
        self._show_export([msg], "busy")
        job = (rs, out, reason, allow_incomplete)

        def work() -> None:
            try:
                result: Any = rs.export(out, reason, ctx=self.setup.ctx,
                                        identity_paths=self.setup.identity_paths,
                                        allow_incomplete=allow_incomplete)
            except Exception as exc:
                result = exc
            self._export_done.emit(result, job)

        threading.Thread(target=work, name="export", daemon=True).start()

    def _on_export_done(self, result: Any, job: Any) -> None:
        self._exporting = False
        self.player.export_button.setEnabled(True)
        rs, out, reason, allow_incomplete = job
        if isinstance(result, Exception):
            if (isinstance(result, UsageError) and not allow_incomplete
                    and "--allow-incomplete" in str(result)):
                # refused for want of session.json (it vanished since the session was opened):
                # nothing was written; ask, then export again into the same folder
                if self._confirm_incomplete(rs):
                    self._start_export(rs, out, reason, True)
                return
            log.warning("export of %s failed: %s", rs.session_id, result)
            self.statusBar().showMessage(trf("export failed: {error}", error=result))
            self._show_export([trf("Export failed: {error}", error=result),
                               trf("Unfinished files were removed; the export-failed audit record "
                                   "lists what remains in {out}.", out=out)], "error")
            self.open_failed.emit(f"export failed: {result}")
            return
        lines, warned = export_summary(result)
        n, m = len(result.get("warnings") or []), len(result.get("skipped") or [])
        self.statusBar().showMessage(
            trf("exported to {out} with {n} warning(s) and {m} part(s) left out: see the export panel",
                out=result["out"], n=n, m=m) if warned else trf("exported to {out}", out=result["out"]))
        self._show_export(lines, "warning" if warned else "ok")
        self.exported.emit(result)

    def _show_export(self, lines: list[str], state: str) -> None:
        self.export_lines = list(lines)
        self.export_status.setText("\n".join(lines))
        self.export_status.setStyleSheet({
            "ok": "background:#e8f5e9; color:#1b5e20; padding:6px;",
            "warning": "background:#fff8e1; color:#e65100; padding:6px; font-weight:bold;",
            "error": "background:#ffebee; color:#b71c1c; padding:6px; font-weight:bold;",
        }.get(state, "padding:6px;"))
        self.export_status.setVisible(True)

    def _ask_reason_dialog(self, prompt: str) -> str | None:
        text, ok = QInputDialog.getText(self, "Reason", prompt)
        return text.strip() if ok and text.strip() else None

    def _ask_confirm_dialog(self, prompt: str) -> bool:
        answer = QMessageBox.question(self, tr("Export an incomplete session?"), prompt,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return bool(answer == QMessageBox.StandardButton.Yes)

    def _ask_dir_dialog(self) -> Path | None:
        d = QFileDialog.getExistingDirectory(self, "Export into an empty folder")
        return Path(d) / (self.session.session_id if self.session else "export") if d else None

    def closeEvent(self, event: Any) -> None:
        self.player.unload()
        super().closeEvent(event)
