"""station run [--demo]: the agent station (window, tray, local API, desktop operation log).

``--demo`` is for trying the station out and for ``./dev run``; it is NOT a deployment. On first
run it creates, in the keyring, a station signing key, and in ``<data>/demo/`` an archive key
pair (``archive.pub``, ``archive.key`` - the private key lies on this disk, so demo recordings
are not protected against this seat) and ``policy.toml`` naming it; capture uses the fake
devices unless ``--devices real``. Real stations get their policy and keys from IT
(``station enroll``, docs/deploy.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from station import logs
from station.context import Context
from station.errors import UsageError

HELP = "start the agent station (window, tray, local API)"
log = logs.get("ui")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true",
                   help="demo keys and policy on first run (not for production)")
    p.add_argument("--devices", choices=("real", "fake"), help="capture devices (default: fake with "
                   "--demo, real otherwise)")
    p.add_argument("--lang", choices=("auto", "zh_CN", "en"),
                   help="UI language (default: policy ui.language)")
    p.add_argument("--api-port", type=int, help="local API port (default: policy api.port; 0: any free)")
    p.add_argument("--no-desktop-log", action="store_true", help="do not log desktop window changes")
    p.add_argument("--no-upload", action="store_true", help="do not upload in the background")
    p.add_argument("--announce", action="store_true", help="print a JSON line when the window is shown")


def demo_setup(ctx: Context) -> dict[str, Any]:
    """Create (once) the demo signing key, archive key pair and policy; point ctx at the policy."""
    from station import policy
    from station.crypto.keys import load_signing_key, new_recipient_pair, read_recipient_file

    demo = ctx.data_dir / "demo"
    load_signing_key(ctx.secrets, create=True)
    if not (demo / "archive.pub").exists():
        new_recipient_pair(demo)
    pub = read_recipient_file(demo / "archive.pub")
    pol_path = demo / "policy.toml"
    if not pol_path.exists():
        text = policy.render({"crypto.recipients": [pub], "storage.kind": "local", "capture.profile": "low",
                              "storage.local_dir": str(demo / "store")})
        pol_path.write_text("# DEMO ONLY - created by `station run --demo`; the archive private key "
                            "is in this folder.\n" + text, encoding="utf-8")
    (demo / "store").mkdir(parents=True, exist_ok=True, mode=0o700)  # the demo's "central" store
    if ctx.policy_path is None:
        ctx.policy_path = pol_path
        ctx.__dict__.pop("policy", None)
    return {"demo_dir": str(demo), "recipient": pub, "policy": str(ctx.policy_path)}


def check_display() -> None:
    """Qt aborts the process without a display; say so cleanly instead."""
    env = os.environ
    shown = env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM") == "offscreen"
    if sys.platform.startswith("linux") and not shown:
        raise UsageError("no display (DISPLAY is not set): start it in the agent's desktop session, "
                         "or use `./dev run`, which starts a virtual one")


def run(args: argparse.Namespace, ctx: Context) -> Any:
    from station.app import App

    check_display()

    if args.demo:
        info = demo_setup(ctx)
        log.warning("demo mode: keys and policy in %s (not for production)", info["demo_dir"])
    if args.api_port is not None and not (args.api_port == 0 or 1024 <= args.api_port <= 65535):
        raise UsageError(f"--api-port {args.api_port}: expected 0 or 1024-65535")
    fake = (args.devices or ("fake" if args.demo else "real")) == "fake"
    ctx.ensure_dirs()
    logs.setup(args.log_level, json_logs=args.json, log_file=ctx.data_dir / "logs" / "station.log")
    try:
        from ui.main import run_gui
    except ImportError as exc:
        raise UsageError(f"the GUI cannot start: {exc}") from None
    app = App(ctx, fake_devices=fake, api_port=args.api_port, desktop=not args.no_desktop_log,
              upload=not args.no_upload).start()
    try:
        code = run_gui(app, language=args.lang or ctx.policy.ui.language, announce=args.announce)
    finally:
        app.close()
    return {"exit": code, "data_dir": str(Path(ctx.data_dir))} if args.json else None


def exit_code(result: Any) -> int:
    return int(result["exit"]) if isinstance(result, dict) else 0
