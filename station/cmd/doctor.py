"""station doctor [--json]"""

from __future__ import annotations

import argparse
from typing import Any

from station import doctor
from station.context import Context

HELP = "check display, devices, keyring, data dir, storage, upload backlog and clock"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", default=[], metavar="CHECK", help="run only these checks")


def run(args: argparse.Namespace, ctx: Context) -> Any:
    ctx.policy  # noqa: B018 - a broken policy is an error of its own, reported before the checks
    checks = doctor.run_checks(ctx)
    if args.only:
        checks = [c for c in checks if c.name in args.only]
    return doctor.as_json(checks)


def human(result: Any) -> str:
    mark = {"ok": " ok ", "warn": "WARN", "fail": "FAIL"}
    lines = [f"[{mark[c['status']]}] {c['name']:<15} {c['reason']}" for c in result["checks"]]
    return "\n".join([*lines, f"overall: {result['status']}"])


def exit_code(result: Any) -> int:
    return 1 if result["status"] == "fail" else 0
