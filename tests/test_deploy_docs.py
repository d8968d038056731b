"""docs/deploy.md carries the policy reference generated from the schema, and it is current."""

from __future__ import annotations

import re

import build_installer as bi
from station import policy

DEPLOY = bi.ROOT / "docs" / "deploy.md"


def _reference_block(text: str) -> str:
    return text.split(bi.DOCS_BEGIN, 1)[1].split(bi.DOCS_END, 1)[0]


def test_policy_reference_in_deploy_docs_matches_the_schema() -> None:
    text = DEPLOY.read_text("utf-8")
    assert _reference_block(text).strip() == policy.reference_markdown().strip(), (
        "docs/deploy.md policy reference is out of date: run `python build_installer.py --update-docs`")
    assert bi.deploy_docs_with_reference(text) == text


def test_every_schema_key_has_exactly_one_row_in_deploy_docs() -> None:
    rows = re.findall(r"^\| `([a-z_]+\.[a-z0-9_]+)` \|", _reference_block(DEPLOY.read_text("utf-8")), re.M)
    assert sorted(rows) == sorted(k.name for k in policy.SCHEMA)


def test_deploy_docs_cover_what_it_must() -> None:
    text = DEPLOY.read_text("utf-8")
    for needle in ("## Requirements", "/etc/dualrec/policy.toml", "station enroll --file", "--stdin",
                   "### SeaweedFS", "### MinIO", "### AWS S3", "COMPLIANCE", "## Firewall and ports",
                   "127.0.0.1", "## Upgrade and uninstall", "Neither deletes user data",
                   "station doctor --json", "/VERYSILENT", "build_pkg.sh"):
        assert needle in text, needle
