"""Helpers for the uploader tests: real sealed sessions in a spool, policies, S3 inspection."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing

from station.crypto.session import SessionSealer
from station.policy import Policy
from tests.services import S3Server

MiB = 1024 * 1024


def new_session_id(day: str = "20261124") -> str:
    return f"{day}T0625{secrets.randbelow(60):02d}Z-{secrets.token_hex(4)}"


def sealed_session(spool: Path, *, segments: int = 2, media_bytes: int = 200_000,
                   station: str = "seat-07", finish: bool = True, session_id: str | None = None,
                   recipient: nacl.public.PrivateKey | None = None,
                   signing_key: nacl.signing.SigningKey | None = None) -> Path:
    """A real sealed session (SessionSealer) with random media; returns its folder."""
    session_id = session_id or new_session_id()
    recipient = recipient or nacl.public.PrivateKey.generate()
    sealer = SessionSealer(spool / session_id, session_id=session_id, station_id=station,
                           recipients=[recipient.public_key],
                           signing_key=signing_key or nacl.signing.SigningKey.generate(),
                           meta={"agent": "a1"})
    chunk = 1 * MiB
    for seq in range(1, segments + 1):
        for kind in ("media", "oplog", "masklog"):
            w = sealer.open_segment(seq, kind)
            left = media_bytes if kind == "media" else 300
            while left > 0:
                w.write(os.urandom(min(chunk, left)))
                left -= chunk
                w.flush()
        sealer.close_segment(seq, {"frames": 1})
    if finish:
        sealer.finish("normal", {"markers": []})
    else:
        sealer.abandon()
    return spool / session_id


def s3_policy(server: S3Server, bucket: str, **over: Any) -> Policy:
    base: dict[str, Any] = {
        "storage__kind": "s3", "storage__s3_endpoint": server.endpoint, "storage__s3_bucket": bucket,
        "storage__s3_prefix": "dualrec", "upload__multipart_threshold_mb": 5, "upload__part_size_mb": 5,
        "upload__retry_initial_s": 0.2, "upload__retry_max_s": 2.0, "upload__during_call": "run",
    }
    base.update(over)
    return Policy.defaults().replace(**base)


def all_versions(server: S3Server, bucket: str, prefix: str = "") -> dict[str, int]:
    """key -> number of stored versions (every key must have exactly one)."""
    c = server.client()
    out: dict[str, int] = {}
    for page in c.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            out[v["Key"]] = out.get(v["Key"], 0) + 1
    return out


def spool_files(session_dir: Path) -> list[str]:
    """The session's evidence files in the spool (not the seat-only checkpoints.log)."""
    if not session_dir.exists():
        return []
    return sorted(p.name for p in session_dir.iterdir() if p.name != "checkpoints.log")


def write_policy(path: Path, pol: Policy) -> Path:
    """The keys of ``pol`` that differ from the defaults, as a site policy TOML file."""
    from station.policy import KEYS, _toml_value

    sections: dict[str, list[str]] = {}
    for name, value in pol.items():
        if value != KEYS[name].default:
            sections.setdefault(KEYS[name].section, []).append(f"{KEYS[name].field} = {_toml_value(value)}")
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n\n" for s, lines in sections.items()))
    return path
