"""station keys init|show|archive-new|storage-set|reviewer-import"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from station.context import Context
from station.crypto import keys
from station.errors import UsageError
from station.secrets import REVIEWER_IDENTITY, STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY

HELP = "station signing key, archive (recipient) keys, storage credentials, reviewer identities"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("init", help="create the station signing key in the keyring (idempotent); "
                   "prints its public key and fingerprint for enrolment")
    sub.add_parser("show", help="station key, policy recipients, keyring contents (no secrets)")
    an = sub.add_parser("archive-new", help="new recipient key pair: DIR/archive.pub (goes into "
                        "the policy) and DIR/archive.key (reviewers only, mode 0600)")
    an.add_argument("--out", required=True, metavar="DIR")
    sub.add_parser("storage-set", help="read the storage access key id and secret from standard "
                   "input (two lines) into the keyring")
    ri = sub.add_parser("reviewer-import", help="add the identities of a key file to the keyring")
    ri.add_argument("keyfile")
    for sp in (sub.choices[n] for n in sub.choices):
        # let --json also follow the action (`station keys init --json`)
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")


def _station_key(ctx: Context, create: bool) -> dict[str, Any]:
    existed = keys.load_signing_key(ctx.secrets) is not None
    sk = keys.load_signing_key(ctx.secrets, create=create)
    if sk is None:
        return {"station_key": None, "fingerprint": None}
    pub = keys.station_text(sk.verify_key)
    out = {"station_key": pub, "fingerprint": keys.fingerprint(pub), "station_id": ctx.station_id,
           "created": create and not existed}
    if out["created"]:
        ctx.audit.append("station-key-created", station=ctx.station_id, public_key=pub)
    return out


def run(args: argparse.Namespace, ctx: Context) -> Any:
    if args.action == "init":
        ctx.secrets.check_backend()
        return _station_key(ctx, create=True)
    if args.action == "show":
        out = _station_key(ctx, create=False)
        out["recipients"] = [{"key": r, "fingerprint": keys.fingerprint(r)}
                             for r in ctx.policy.crypto.recipients]
        out["trusted_stations"] = list(ctx.policy.crypto.trusted_stations)
        out["reviewer_identities"] = [
            {"recipient": keys.recipient_text(k.public_key),
             "fingerprint": keys.fingerprint(keys.recipient_text(k.public_key))}
            for k in keys.keyring_identities(ctx.secrets)]
        out["storage_credentials"] = ctx.secrets.get(STORAGE_ACCESS_KEY) is not None
        return out
    if args.action == "archive-new":
        res = keys.new_recipient_pair(Path(args.out))
        ctx.audit.append("archive-key-created", public_key=res["public_key"])
        return res
    if args.action == "storage-set":
        if sys.stdin.isatty():  # typed by hand: prompt without echo
            lines = [getpass.getpass("access key id: ").strip(),
                     getpass.getpass("secret access key: ").strip()]
            lines = [ln for ln in lines if ln]
        else:
            lines = [ln.strip() for ln in sys.stdin.read().splitlines() if ln.strip()]
        if len(lines) != 2:
            raise UsageError("expected two lines on standard input: access key id, then secret "
                             f"(got {len(lines)} non-empty lines)")
        ctx.secrets.set(STORAGE_ACCESS_KEY, lines[0])
        ctx.secrets.set(STORAGE_SECRET_KEY, lines[1])
        ctx.audit.append("storage-credentials-set")
        return {"stored": [STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY]}
    if args.action == "reviewer-import":
        added = keys.import_identities(Path(args.keyfile), ctx.secrets)
        ctx.audit.append("reviewer-identity-imported", recipients=added)
        return {"imported": added, "keyring_entry": REVIEWER_IDENTITY,
                "total": len(keys.keyring_identities(ctx.secrets))}
    raise UsageError(f"unknown action {args.action}")


def human(result: dict[str, Any]) -> str:
    if "imported" in result:
        return "\n".join([f"imported {r}" for r in result["imported"]]
                         + [f"{result['total']} identities in the keyring"])
    if "stored" in result:
        return "storage credentials stored in the keyring"
    if "key" in result and "pub" in result:
        return (f"wrote {result['pub']} and {result['key']} (keep archive.key offline, reviewers "
                f"only)\nrecipient {result['public_key']}\nfingerprint {result['fingerprint']}")
    lines = []
    if result.get("station_key"):
        lines += [f"station key  {result['station_key']}",
                  f"fingerprint  {result['fingerprint']}"]
        if result.get("created"):
            lines.append("(created now)")
    else:
        lines.append("no station key (run `station keys init`)")
    for r in result.get("recipients", []):
        lines.append(f"recipient    {r['key']}  {r['fingerprint']}")
    for r in result.get("reviewer_identities", []):
        lines.append(f"identity for {r['recipient']}  {r['fingerprint']}")
    if "storage_credentials" in result:
        lines.append("storage credentials: " + ("set" if result["storage_credentials"] else
                                                "not set"))
    return "\n".join(lines)
