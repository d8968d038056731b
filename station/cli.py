"""The ``station`` command line.

Every subcommand takes ``--json`` for machine-readable output, prints a one-line error and exits
non-zero on failure. Subcommands live in ``station/cmd/<name>.py``, each with ``HELP``,
``configure(parser)``, ``run(args, ctx)`` returning a JSON-able result, and optionally
``human(result) -> str`` and ``exit_code(result) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# numpy's OpenBLAS starts a worker thread per extra core when numpy is imported, and the workers
# spin for a while: ~0.1 CPU s per process here. The station does no linear algebra, so no pool.
# Set before any command imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from station import __version__, logs
from station.context import Context
from station.errors import StationError

COMMANDS: dict[str, str] = {
    "run": "station.cmd.run",
    "review": "station.cmd.review",
    "record": "station.cmd.record",
    "sessions": "station.cmd.sessions",
    "verify": "station.cmd.verify",
    "export": "station.cmd.export",
    "keys": "station.cmd.keys",
    "upload": "station.cmd.upload",
    "mask-image": "station.cmd.mask_image",
    "policy": "station.cmd.policy",
    "doctor": "station.cmd.doctor",
    "enroll": "station.cmd.enroll",
    "site": "station.cmd.site",
    "api": "station.cmd.api",
}

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_INTACT = 0, 1, 2, 3


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == COMMANDS[name]:
            return None
        raise


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The parser; with ``only``, just that subcommand's module is imported (start-up cost:
    recording should not pay for boto3, review or Qt imports)."""
    parser = argparse.ArgumentParser(prog="station", description="DualRec Station")
    parser.add_argument("--version", action="version", version=f"station {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--policy", metavar="FILE", help="site policy (default: $STATION_POLICY, "
                        "/etc/dualrec/policy.toml, built-in default)")
    common.add_argument("--data-dir", metavar="DIR", help="data dir (default: $STATION_HOME)")
    common.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for name in COMMANDS if only is None else [only]:
        mod = _load(name)
        if mod is None:
            continue
        modules[name] = mod
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, parents=[common])
        mod.configure(p)
    return parser, modules


def _emit(result: Any, as_json: bool, mod: ModuleType) -> None:
    if result is None:
        return
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    elif hasattr(mod, "human"):
        text = mod.human(result)
        if text:
            print(text)
    elif isinstance(result, str):
        print(result)
    else:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    # everything the station writes (data dir, spool, journal, audit, logs, key files, exports)
    # is private to its user: files 0600, folders 0700 (docs/security.md 2.8), whatever umask
    # the shell or the service manager gave it
    os.umask(0o077)
    words = sys.argv[1:] if argv is None else argv
    first = next((w for w in words if not w.startswith("-")), None)
    parser, modules = build_parser(first if first in COMMANDS and _load(first) else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    mod = modules[args.command]
    logs.setup(args.log_level, json_logs=args.json)
    ctx = Context(data_dir=Path(args.data_dir) if args.data_dir else Context().data_dir,
                  policy_path=Path(args.policy) if args.policy else None, json=args.json)
    try:
        result = mod.run(args, ctx)
        _emit(result, args.json, mod)
        return int(mod.exit_code(result)) if hasattr(mod, "exit_code") else EXIT_OK
    except StationError as exc:
        _fail(args, str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _fail(args, "interrupted")
        return 130
    except OSError as exc:
        _fail(args, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_ERROR


def _fail(args: argparse.Namespace, message: str) -> None:
    message = " ".join(message.split())
    if getattr(args, "json", False):
        print(json.dumps({"error": message}, ensure_ascii=False))
    print(f"station {args.command}: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
