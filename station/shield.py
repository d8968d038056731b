"""Number shield: customer identifiers are turned into masked display forms and a salted hash at
the door (the local API) and the full values are dropped there.

* phone numbers keep the first 3 and last 4 digits: ``13812345678`` -> ``138****5678``;
* names keep the first character: ``张三`` -> ``张*``, ``Alice Smith`` -> ``A*********``;
* resident id numbers keep the first 3 and last 4 characters: ``110***********1234``;
* a salted SHA-256 over the normalised values (salt from the keyring,
  :meth:`~station.secrets.SecretStore.customer_salt`) lets supervisors link sessions of the same
  customer without anyone being able to read the values back.

Nothing in this module logs, stores or returns a full value. :class:`Customer` holds only the
shielded forms; build it with :func:`shield`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from station.errors import StationError

FIELDS = ("number", "name", "id_number")
_MAX_LEN = 64


class ShieldError(StationError, ValueError):
    """customer field {!r}: {}"""


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def mask_number(value: str) -> str:
    """``13812345678`` -> ``138****5678``; short numbers keep at most their last 2 digits."""
    d = _digits(value)
    if len(d) >= 11:
        return d[:3] + "*" * (len(d) - 7) + d[-4:]
    if len(d) >= 7:
        return "*" * (len(d) - 4) + d[-4:]
    return "*" * max(len(d) - 2, 1) + d[-2:] if len(d) > 2 else "*" * len(d)


def mask_name(value: str) -> str:
    """``张三`` -> ``张*``, ``欧阳娜娜`` -> ``欧***``; one character names become ``*``."""
    name = "".join(value.split())
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * (len(name) - 1)


def mask_id(value: str) -> str:
    """``110101199003071234`` -> ``110***********1234``."""
    v = "".join(value.split()).upper()
    if len(v) <= 8:
        return "*" * len(v)
    return v[:3] + "*" * (len(v) - 7) + v[-4:]


_MASKERS = {"number": mask_number, "name": mask_name, "id_number": mask_id}
_VALID = {
    "number": re.compile(r"\+?[0-9][0-9 ()-]{5,30}"),
    "name": re.compile(r"[^\x00-\x1f<>{}\\]{1,64}"),
    "id_number": re.compile(r"[0-9]{15}|[0-9]{17}[0-9Xx]|[A-Za-z0-9]{6,32}"),
}


def normalise(field: str, value: str) -> str:
    if field == "number":
        d = _digits(value)
        return d[2:] if d.startswith("86") and len(d) == 13 else d
    if field == "id_number":
        return "".join(value.split()).upper()
    return unicodedata.normalize("NFKC", "".join(value.split()))


@dataclass(frozen=True)
class Customer:
    """The only form in which customer details live in the station: masked, plus a link hash."""

    masked: dict[str, str]
    hash: str  # "hs256:<hex>" over the normalised fields, salted; "" when no field was given

    def display(self) -> str:
        order = ("name", "number", "id_number")
        return "  ".join(self.masked[k] for k in order if k in self.masked)

    def as_manifest(self) -> dict[str, Any]:
        return {"masked": dict(self.masked), "hash": self.hash}


def customer_hash(salt: bytes, fields: dict[str, str]) -> str:
    """Salted hash linking sessions of the same customer: the number if given (the strongest
    link a call centre has), else the id number, else the name."""
    for key in ("number", "id_number", "name"):
        if fields.get(key):
            return _hs256(salt, f"{key}:{normalise(key, fields[key])}")
    return ""


def _hs256(salt: bytes, text: str) -> str:
    """The salted link hash written in clear: ``hs256:`` + HMAC-SHA-256 hex."""
    return "hs256:" + hmac.new(salt, text.encode(), hashlib.sha256).hexdigest()


def business_ref_hash(salt: bytes, ref: str) -> str:
    """Salted hash of a business reference, the only form of it written in clear (manifests):
    sessions of one reference can be linked and found by whoever holds the salt, while the
    reference itself (often a policy or order number, sometimes a customer's number typed into
    it) stays in the sealed operation log. "" for an empty reference."""
    ref = " ".join((ref or "").split())
    if not ref:
        return ""
    return _hs256(salt, f"business_ref:{ref}")


def shield(raw: Any, salt: bytes) -> Customer:
    """Validate customer details from the outside world and keep only their shielded forms.

    ``raw`` is a mapping with any of ``number``, ``name``, ``id_number`` (strings). Unknown keys
    and wrong types are refused with a :class:`ShieldError` that never quotes the value.
    """
    if raw is None:
        return Customer({}, "")
    if not isinstance(raw, dict):
        raise ShieldError("customer", "expected an object with number, name, id_number")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ShieldError(unknown[0], f"unknown field; allowed: {', '.join(FIELDS)}")
    clean: dict[str, str] = {}
    for key in FIELDS:
        value = raw.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ShieldError(key, "expected a string")
        value = value.strip()
        if len(value) > _MAX_LEN or not _VALID[key].fullmatch(value):
            raise ShieldError(key, "not a valid value (the value is not repeated here)")
        clean[key] = value
    masked = {k: _MASKERS[k](v) for k, v in clean.items()}
    return Customer(masked, customer_hash(salt, clean))


# --- free text (window titles, marker labels) ---------------------------------------------------
_DIGIT_RUN = re.compile(r"\+?\d[\d \t().-]*\d")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ID18 = re.compile(r"\d{17}[\dXx]")


def _long_number(m: re.Match[str]) -> str:
    text = m.group()
    digits = sum(c.isdigit() for c in text)
    longest = max(len(r) for r in re.findall(r"\d+", text))
    if digits >= 10 or longest >= 7:  # phone, id, card and account numbers; not "2026-4711"
        return "#" * digits
    return text


def _fallback_redact(text: str) -> str:
    """Conservative backstop behind the PII detectors: every e-mail and every long number
    (7+ digits in a row, or 10+ digits with separators), valid check digit or not."""
    text = _EMAIL.sub("[email]", text)
    text = _ID18.sub("[id]", text)
    return _DIGIT_RUN.sub(_long_number, text)


def redact(text: str) -> str:
    """Free text on its way into the operation log: the masking engine's PII detectors
    (``recorder.masking.redact_text``) when present, else a conservative digit-run redaction.
    A detector that fails falls back to the conservative form (fail closed)."""
    if not text:
        return text
    try:
        from recorder.masking import redact_text
    except ImportError:
        return _fallback_redact(text)
    try:
        redacted, _findings = redact_text(text)
        return _fallback_redact(str(redacted))
    except Exception:
        return _fallback_redact(text)
