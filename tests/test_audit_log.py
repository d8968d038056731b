"""The local audit log is append-only and hash-chained: any edit is detected."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.logs import AuditLog, verify_audit


def make(tmp_path: Path, n: int) -> Path:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(n):
        log.append("export", session=f"s{i}", reason="court order 自 2026")
    return log.path


def test_chain_of_untouched_log_verifies_and_survives_reopen(tmp_path: Path) -> None:
    path = make(tmp_path, 3)
    AuditLog(path).append("open", session="s9")  # a new process continues the chain
    ok, detail = verify_audit(path)
    assert ok, detail
    assert len(path.read_text().splitlines()) == 4


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_edited_removed_or_swapped_line_breaks_the_chain(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path_factory.mktemp("a"), 5)
    lines = path.read_text().splitlines()
    op = data.draw(st.sampled_from(["edit", "remove", "swap"]))
    i = data.draw(st.integers(0, 3))
    if op == "edit":
        rec = json.loads(lines[i])
        rec["session"] = "forged"
        lines[i] = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    elif op == "remove":
        del lines[i]
    else:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_text("\n".join(lines) + "\n")
    ok, detail = verify_audit(path)
    assert not ok and "line" in detail


def test_diagnostic_log_follows_stderr_and_never_writes_to_a_closed_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread that logs after the stderr it was set up with was closed (a test's capture, a
    GUI that redirected it) writes to the stderr of the moment, without a logging error."""
    from station import logs

    early, late = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", early)
    logs.setup(level="INFO")
    early.close()
    monkeypatch.setattr(sys, "stderr", late)
    logs.get("ui").warning("notification not delivered")
    assert "dualrec.ui: notification not delivered" in late.getvalue()
    assert "Logging error" not in late.getvalue()
