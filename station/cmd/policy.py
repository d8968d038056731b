"""station policy init|check|show"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from station import policy
from station.context import Context
from station.errors import UsageError

HELP = "write a starter policy, validate one, or show the effective policy"

# Options of `policy init` that later capabilities add; each maps to a function turning the
# parsed argument into policy keys. Kept in a table so the init command stays one function.
INIT_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--out",), {"metavar": "FILE", "help": "write here instead of standard output"}),
    (("--set",), {"metavar": "KEY=VALUE", "action": "append", "default": [],
                  "help": "set any key (VALUE parsed as TOML, bare words as strings)"}),
    (("--recipient",), {"metavar": "PUBFILE", "action": "append", "default": [],
                        "help": "recipient public key file (archive.pub), repeatable"}),
    (("--store",), {"metavar": "URL", "help": "central storage: local:DIR or s3://BUCKET/PREFIX"}),
    (("--endpoint",), {"metavar": "URL", "help": "S3 endpoint URL"}),
    (("--region",), {"metavar": "REGION", "help": "S3 region"}),
]


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="write a commented starter policy")
    for flags, kw in INIT_OPTIONS:
        init.add_argument(*flags, **kw)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    check = sub.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    sub.add_parser("show", help="print the effective policy and where each value comes from")


def _parse_set(items: list[str]) -> dict[str, Any]:
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def init_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.recipient:
        from station.crypto.keys import read_recipient_file

        values["crypto.recipients"] = [read_recipient_file(Path(f)) for f in args.recipient]
    if args.store:
        values.update(store_keys(args.store, args.endpoint, args.region))
    elif args.endpoint or args.region:
        raise UsageError("--endpoint and --region go with --store s3://BUCKET/PREFIX")
    values.update(_parse_set(args.set))
    return values


def store_keys(url: str, endpoint: str | None, region: str | None) -> dict[str, Any]:
    if url.startswith("local:"):
        return {"storage.kind": "local", "storage.local_dir": str(Path(url[6:]).expanduser().absolute())}
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        out: dict[str, Any] = {"storage.kind": "s3", "storage.s3_bucket": bucket,
                               "storage.s3_prefix": prefix.strip("/") or "dualrec"}
        if endpoint:
            out["storage.s3_endpoint"] = endpoint
        if region:
            out["storage.s3_region"] = region
        return out
    raise UsageError(f"--store {url!r}: expected local:DIR or s3://BUCKET/PREFIX")


def run(args: argparse.Namespace, ctx: Context) -> Any:
    if args.action == "init":
        values = init_overrides(args)
        text = policy.render(values)
        if values.get("storage.local_dir"):  # the store the policy names must exist: create it now
            Path(values["storage.local_dir"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        if args.out:
            out = Path(args.out)
            if out.exists() and not args.force:
                raise UsageError(f"{out} exists (use --force to overwrite)")
            out.write_text(text, encoding="utf-8")
            return {"written": str(out)}
        return text
    if args.action == "check":
        pol = policy.load(Path(args.file))
        changed = sorted(k for k, src in pol.sources.items() if src != "default")
        return {"file": args.file, "valid": True, "keys_set": changed}
    pol = ctx.policy
    return {k: {"value": v, "from": pol.sources[k]} for k, v in pol.items()}


def human(result: Any) -> str:
    if isinstance(result, str):
        return result.rstrip("\n")
    if "written" in result:
        return f"wrote {result['written']}"
    if "valid" in result:
        return f"{result['file']}: valid ({len(result['keys_set'])} keys set)"
    return "\n".join(f"{k} = {v['value']!r}  ({v['from']})" for k, v in result.items())
