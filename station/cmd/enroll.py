"""station enroll [--file ENROLFILE | --stdin]

Enrols this station once, as IT deploys it:

1. storage credentials given by IT go into the keyring: from an enrolment file (TOML or JSON with
   ``access_key_id`` and ``secret_access_key``), which is deleted once the keyring holds them, or
   from two lines on standard input (access key id, then secret);
2. the station signing key is created in the keyring if there is none;
3. the station's public key is registered in central storage under
   ``<prefix>/enrolment/<station_id>.json`` (see station/enrolment.py) as an enrolment request;
   reviewers trust it once IT's site authority approves it (``station site approve``);
4. the fingerprint is printed: IT collects it for ``station site approve --expect``.

Every step can be repeated: a second run with nothing to import re-registers (a no-op when the
record is there). Bad input is refused before anything is changed, and the enrolment file is
kept until its credentials are safely in the keyring.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from station import __version__, enrolment
from station.clock import utc_now_iso
from station.context import Context
from station.crypto import keys
from station.errors import SecretMissing, StationError, UsageError
from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY
from uploader.stores import open_store

HELP = "enrol this station: storage credentials into the keyring, station key, register it in storage"

ACCESS_RE = re.compile(r"[A-Za-z0-9._+/=-]{3,128}")
SECRET_RE = re.compile(r"[\x21-\x7e]{8,256}")  # printable ASCII, no spaces
ACCESS_NAMES = ("access_key_id", "aws_access_key_id", "access_key")
SECRET_NAMES = ("secret_access_key", "aws_secret_access_key", "secret_key")


class EnrolFileError(StationError, ValueError):
    """enrolment file {}: {} (nothing was changed; the file is kept)"""


class StdinCredentialsError(UsageError):
    """standard input: {1} (nothing was changed)"""


class RegistrationFailed(StationError, RuntimeError):
    """saved in the keyring: {}; registering in storage failed: {}; run `station enroll` again"""


class EnrolFileNotDeleted(StationError, PermissionError):
    """credentials imported, but the enrolment file {} could not be deleted ({}): delete it now"""


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--file", metavar="ENROLFILE",
                     help="TOML or JSON with access_key_id and secret_access_key; deleted after import")
    src.add_argument("--stdin", action="store_true",
                     help="read the access key id and the secret as two lines from standard input")
    p.add_argument("--no-register", action="store_true",
                   help="only import credentials and create the key (register later)")


def _pick(data: dict[str, Any], names: tuple[str, ...], where: str) -> str:
    nested = data.get("storage")
    sections: list[dict[str, Any]] = [data, nested] if isinstance(nested, dict) else [data]
    for section in sections:
        for n in names:
            if n in section:
                value = section[n]
                if not isinstance(value, str):
                    raise EnrolFileError(where, f"{n} must be a string")
                return value.strip()
    raise EnrolFileError(where, f"missing {names[0]}")


def _check_credentials(access: str, secret: str, where: str, err: type[StationError]) -> None:
    if not ACCESS_RE.fullmatch(access):
        raise err(where, "the access key id must be 3-128 characters of letters, digits and ._+/=-")
    if not SECRET_RE.fullmatch(secret):
        raise err(where, "the secret must be 8-256 printable characters without spaces")


def read_enrol_file(path: Path) -> tuple[str, str]:
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise EnrolFileError(where, "not found") from None
    except OSError as exc:
        raise EnrolFileError(where, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EnrolFileError(where, "not UTF-8 text") from None
    data: Any
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EnrolFileError(where, f"not valid JSON: {exc}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise EnrolFileError(where, f"not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise EnrolFileError(where, "expected a table/object")
    access, secret = _pick(data, ACCESS_NAMES, where), _pick(data, SECRET_NAMES, where)
    _check_credentials(access, secret, where, EnrolFileError)
    return access, secret


def read_stdin_credentials(stream: Any) -> tuple[str, str]:
    lines = [ln.strip() for ln in stream.read(4096).splitlines() if ln.strip()]
    if len(lines) != 2:
        raise UsageError(f"--stdin: expected two lines (access key id, secret), got {len(lines)}")
    access, secret = lines
    _check_credentials(access, secret, "stdin", StdinCredentialsError)
    return access, secret


def _overwrite(path: Path) -> None:
    """Best effort before unlinking: overwrite the secret in place (journaling file systems and
    SSDs may keep old blocks; the enrolment file should live on tmpfs, e.g. /run/user/UID)."""
    try:
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        pass


def store_credentials(ctx: Context, access: str, secret: str) -> None:
    ctx.secrets.set(STORAGE_ACCESS_KEY, access)
    ctx.secrets.set(STORAGE_SECRET_KEY, secret)
    if ctx.secrets.get(STORAGE_ACCESS_KEY) != access or ctx.secrets.get(STORAGE_SECRET_KEY) != secret:
        raise EnrolFileError("(keyring)", "the keyring did not keep the credentials")


def run(args: argparse.Namespace, ctx: Context) -> Any:
    ctx.secrets.check_backend()
    pol = ctx.policy  # an invalid policy stops here, before anything changes
    result: dict[str, Any] = {"station_id": ctx.station_id, "credentials": "unchanged"}

    if args.file:
        path = Path(args.file)
        access, secret = read_enrol_file(path)
        store_credentials(ctx, access, secret)
        result["credentials"] = "imported from file"
        try:
            _overwrite(path)
            path.unlink()
        except OSError as exc:
            ctx.audit.append("enrolment-credentials-imported", source="file", file_deleted=False)
            raise EnrolFileNotDeleted(path, exc.strerror or exc) from None
        result["file_deleted"] = str(path)
        ctx.audit.append("enrolment-credentials-imported", source="file", file_deleted=True)
    elif args.stdin:
        access, secret = read_stdin_credentials(sys.stdin)
        store_credentials(ctx, access, secret)
        result["credentials"] = "imported from standard input"
        ctx.audit.append("enrolment-credentials-imported", source="stdin")

    existing = keys.load_signing_key(ctx.secrets)
    sk = existing or keys.load_signing_key(ctx.secrets, create=True)
    assert sk is not None
    public = keys.station_text(sk.verify_key)
    result.update({"key_created": existing is None, "public_key": public,
                   "fingerprint": keys.fingerprint(public)})
    if existing is None:
        ctx.audit.append("station-key-created", fingerprint=result["fingerprint"])

    if args.no_register:
        result["registered"] = None
        return result
    saved = "station key" + (", storage credentials" if result["credentials"] != "unchanged" else "")
    if pol.storage.kind == "s3" and (ctx.secrets.get(STORAGE_ACCESS_KEY) is None
                                     or ctx.secrets.get(STORAGE_SECRET_KEY) is None):
        raise SecretMissing(STORAGE_ACCESS_KEY, "pass the credentials IT gave you: "
                            "station enroll --file ENROLFILE, or --stdin")
    record = enrolment.make_record(sk, ctx.station_id, site=str(pol.station.site),
                                   enrolled_utc=utc_now_iso(), station_version=__version__)
    try:
        store = open_store(pol, ctx.secrets, ctx.data_dir)
        try:
            key, already = enrolment.register(store, record)
            approved = store.head(enrolment.approval_key(store, ctx.station_id,
                                                         result["public_key"])) is not None
        finally:
            store.close()
    except enrolment.EnrolmentConflict:
        raise
    except StationError as exc:
        raise RegistrationFailed(saved, exc) from None
    result.update({"registered": key, "already_enrolled": already, "store": store.describe(),
                   "approved": approved})
    if not already:
        ctx.audit.append("station-enrolled", station=ctx.station_id, fingerprint=result["fingerprint"],
                         store=store.describe(), key=key)
    return result


def human(result: dict[str, Any]) -> str:
    lines = [f"station      {result['station_id']}",
             f"public key   {result['public_key']}" + ("  (new)" if result.get("key_created") else ""),
             f"fingerprint  {result['fingerprint']}",
             f"credentials  {result['credentials']}"]
    if result.get("file_deleted"):
        lines.append(f"deleted      {result['file_deleted']}")
    if result.get("registered"):
        state = "already enrolled" if result.get("already_enrolled") else "registered"
        lines.append(f"enrolment    {state}: {result['store']} {result['registered']}")
        lines.append("approval     " + ("approved by the site authority" if result.get("approved")
                                      else "pending: IT approves it with `station site approve`; "
                                      "until then reviewers do not trust this seat's sessions"))
    else:
        lines.append("enrolment    not registered (run `station enroll` again without --no-register)")
    return "\n".join(lines)
