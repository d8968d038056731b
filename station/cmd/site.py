"""station site init|requests|approve|revoke: the site enrolment authority (IT, off the seats).

``station enroll`` on a seat writes an enrolment *request* to central storage; a request proves
only that its writer holds the key it names. Reviewers trust a station key when an *approval*
signed by a site authority pinned in their policy (``crypto.site_authorities``) binds it to the
station id (station/enrolment.py, docs/deploy.md). This command is IT's side:

* ``init --out DIR``: the authority key pair (``site-authority.key`` stays with IT);
* ``requests``: every station seen in storage and its state (pending, approved, replaced, revoked);
* ``approve --authority KEYFILE (--expect FILE | --all | STATION ...)``: countersign requests in
  bulk. ``--expect`` takes ``station_id fingerprint`` lines collected at deployment (e.g. from
  ``station enroll --json`` through the software-distribution tool) and approves only requests
  that match them, so a request swapped in storage is never approved. A station whose request now
  names another key than the one approved is approved again only when named with ``--replace``
  (a seat that was re-keyed on purpose);
* ``revoke --authority KEYFILE STATION --reason TEXT``: withdraw a station key (stolen seat).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from station import enrolment
from station.clock import utc_now_iso
from station.context import Context
from station.crypto import keys
from station.errors import UsageError
from uploader.stores import open_store

HELP = "site enrolment authority: create it, list enrolment requests, approve or revoke stations"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    i = sub.add_parser("init", help="new authority key pair: DIR/site-authority.key (IT only, "
                       "mode 0600) and DIR/site-authority.pub (goes into crypto.site_authorities)")
    i.add_argument("--out", required=True, metavar="DIR")
    sub.add_parser("requests", help="stations in storage with their enrolment state")
    a = sub.add_parser("approve", help="countersign enrolment requests")
    a.add_argument("--authority", required=True, metavar="KEYFILE")
    a.add_argument("--expect", metavar="FILE", help="lines 'station_id fingerprint': approve "
                   "only requests that match")
    a.add_argument("--all", action="store_true", help="approve every pending request")
    a.add_argument("stations", nargs="*", default=[], metavar="STATION")
    a.add_argument("--replace", action="store_true", help="also approve the named stations whose "
                   "request names another key than the approved one (re-keyed seats)")
    r = sub.add_parser("revoke", help="withdraw a station key; sessions it signed become untrusted")
    r.add_argument("--authority", required=True, metavar="KEYFILE")
    r.add_argument("station")
    r.add_argument("--key", metavar="ed25519:KEY", help="the key to revoke (default: the approved "
                   "keys of the station)")
    r.add_argument("--reason", required=True)
    for sp in sub.choices.values():  # the common options may also follow the action
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
        sp.add_argument("--policy", metavar="FILE", default=argparse.SUPPRESS, help="site policy")


def _expected(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        sid, _, fp = line.partition(" ")
        fp = fp.replace(" ", "").lower()
        if not enrolment.STATION_ID_RE.fullmatch(sid) or len(fp) != 32:
            raise UsageError(f"{path} line {n}: expected 'station_id fingerprint'")
        out[sid] = fp
    return out


def _states(trust: enrolment.SiteTrust) -> list[dict[str, Any]]:
    rows = []
    for sid, st in sorted(trust.stations.items()):
        rows.append({"station": sid, "state": st.state,
                     "request": st.request.fingerprint if st.request else None,
                     "approved": [keys.fingerprint(k) for k in sorted(st.approved)],
                     "revoked": [keys.fingerprint(k) for k in sorted(st.revoked)]})
    return rows


def run(args: argparse.Namespace, ctx: Context) -> Any:
    if args.action == "init":
        res = enrolment.new_authority(Path(args.out))
        ctx.audit.append("site-authority-created", public_key=res["public_key"])
        return res
    store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
    try:
        authorities = list(ctx.policy.crypto.site_authorities)
        if args.action == "requests":
            trust = enrolment.site_trust(store, authorities)
            return {"stations": _states(trust), "problems": trust.problems,
                    "authorities": [keys.fingerprint(a) for a in authorities]}
        authority = enrolment.read_authority_key(Path(args.authority))
        public = keys.station_text(authority.verify_key)
        warning = None if public in authorities else (
            f"authority {keys.fingerprint(public)} is not in this policy's "
            "crypto.site_authorities: reviewers trust its approvals only once it is")
        trust = enrolment.site_trust(store, {*authorities, public})
        if args.action == "revoke":
            return _revoke(args, ctx, store, authority, trust, warning)
        return _approve(args, ctx, store, authority, trust, warning)
    finally:
        store.close()


def _approve(args: argparse.Namespace, ctx: Context, store: Any, authority: Any,
             trust: enrolment.SiteTrust, warning: str | None) -> dict[str, Any]:
    if sum(map(bool, (args.expect, args.all, args.stations))) != 1:
        raise UsageError("say which requests to approve: --expect FILE, --all, or STATION names")
    expect = _expected(Path(args.expect)) if args.expect else None
    named = set(args.stations)
    out: dict[str, Any] = {"approved": [], "already": [], "skipped": [], "warning": warning,
                           "problems": trust.problems}
    chosen = (sorted(expect) if expect is not None else sorted(named) if named
              else sorted(trust.stations))
    for sid in chosen:
        st = trust.stations.get(sid)
        req = st.request if st else None
        if req is None:
            out["skipped"].append({"station": sid, "reason": "no enrolment request in storage"})
            continue
        if expect is not None and enrolment.fp_hex(req.public_key) != expect[sid]:
            out["skipped"].append({"station": sid, "reason": (
                f"the request names key {req.fingerprint}, the expected list says "
                f"{expect[sid]}: not approved (a request swapped in storage?)")})
            continue
        state = st.state if st else "pending"
        if state == "approved":
            out["already"].append({"station": sid, "fingerprint": req.fingerprint})
            continue
        if state == "revoked":
            out["skipped"].append({"station": sid, "reason": f"key {req.fingerprint} is revoked"})
            continue
        if state == "replaced" and not (args.replace and sid in named | set(expect or {})):
            out["skipped"].append({"station": sid, "reason": (
                f"the request names key {req.fingerprint}, another key is approved for {sid}: "
                "approve it by name with --replace only if the seat was re-keyed on purpose")})
            continue
        key, _ = enrolment.approve(store, authority, req, utc_now_iso())
        ctx.audit.append("enrolment-approved", station=sid, fingerprint=req.fingerprint,
                         object=key)
        out["approved"].append({"station": sid, "fingerprint": req.fingerprint, "object": key})
    return out


def _revoke(args: argparse.Namespace, ctx: Context, store: Any, authority: Any,
            trust: enrolment.SiteTrust, warning: str | None) -> dict[str, Any]:
    st = trust.stations.get(args.station)
    if args.key:
        keys.parse_station(args.key)
        targets = [args.key.strip()]
    else:
        targets = sorted(st.approved) if st else []
    if not targets:
        raise UsageError(f"station {args.station} has no approved key; name one with --key")
    out: dict[str, Any] = {"revoked": [], "warning": warning}
    for public in targets:
        key, already = enrolment.revoke(store, authority, args.station, public, args.reason,
                                        utc_now_iso())
        ctx.audit.append("station-key-revoked", station=args.station,
                         fingerprint=keys.fingerprint(public), reason=args.reason)
        out["revoked"].append({"station": args.station, "fingerprint": keys.fingerprint(public),
                               "object": key, "already": already})
    return out


def human(res: dict[str, Any]) -> str:
    if "fingerprint" in res and "pub" in res:
        return (f"site authority {res['public_key']}\nfingerprint  {res['fingerprint']}\n"
                f"private key  {res['key']} (keep it with IT, never on a seat)\n"
                f"put into the reviewers' policy: crypto.site_authorities = [\"{res['public_key']}\"]")
    lines: list[str] = []
    for row in res.get("stations", []):
        lines.append(f"{row['station']:24} {row['state']:10} request {row['request'] or '-'}"
                     + (f"  approved {', '.join(row['approved'])}" if row["approved"] else ""))
    for k in ("approved", "already", "revoked"):
        for row in res.get(k, []):
            lines.append(f"{k:9} {row['station']}  {row['fingerprint']}")
    for row in res.get("skipped", []):
        lines.append(f"skipped   {row['station']}: {row['reason']}")
    for p in res.get("problems", []):
        lines.append(f"problem   {p}")
    if res.get("warning"):
        lines.append(f"warning   {res['warning']}")
    return "\n".join(lines)
