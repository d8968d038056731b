"""An independent verifier (tests/spec_verify.py, written from docs/format.md alone) checked
against the session vectors and against the product's ``station verify``.

* ``test_vector_expectation``: the independent verifier gives every vector's ``expect:`` codes and
  ``verdict:`` (expect.txt hidden from it: it only sees the session files).
* ``test_vector_cli``: the product's command line ``python -m station.cli verify SESSION_ID --json
  --trust KEY`` (a subprocess, no keyring daemon reachable) agrees with it on every vector.
* ``test_mutation``: the product, called in-process as a black box (``station.cli.main``), agrees
  with it on deterministic single changes of the ``ok``, ``truncated`` and
  ``recovered-at-boundary`` vectors (deleted, flipped, cut, swapped, re-encoded files).
* ``test_crafted``: the same on sessions re-signed with a test key of our own, each probing one
  rule of section 8 (or 2.2) that the vectors do not reach. A disagreement where the spec is
  ambiguous or the product differs from the spec is marked ``xfail(strict=True)`` with the section.

Compared: the sorted problem codes (``categories`` of the JSON, ``ok`` meaning none), the verdict,
the exit code, and the status of every segment in the report.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from tests import spec_verify as sv

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "session"
CASES = sorted(p.name for p in VECTORS.iterdir() if p.is_dir())
SID = "20261124T062500Z-0000beef"  # the session id of every vector (their manifests name it)
POLICY = '[station]\nid = "verifier"\n'
OLD_WORDS = {"missing segment": "missing-segment", "bad signature": "bad-signature"}
RECOVERY_EXTRA = {"crash-recovered", "truncated"}  # format.md 8: not listed by recovery-* vectors


def load_case(case: str) -> dict[str, bytes]:
    folder = VECTORS / case
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "expect.txt"}


def load_expect(case: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (VECTORS / case / "expect.txt").read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def expected_codes(expect: str) -> set[str]:
    codes = {OLD_WORDS.get(c.strip(), c.strip()) for c in expect.split(",") if c.strip()}
    return codes - {"ok"}


def mine(files: dict[str, bytes], trust: list[str]) -> dict[str, Any]:
    rep = sv.verify_files(files, SID, sv.Trust.from_entries(trust))
    return {"codes": sorted(rep.codes), "verdict": rep.verdict, "exit": rep.exit_code,
            "segments": {int(k): v for k, v in rep.segments.items()}}


def product_result(stdout: str, rc: int) -> dict[str, Any]:
    try:
        data = json.loads(stdout)
    except ValueError:
        return {"codes": None, "verdict": None, "exit": rc, "segments": None, "raw": stdout[-2000:]}
    if not isinstance(data, dict) or "categories" not in data:
        return {"codes": None, "verdict": None, "exit": rc, "segments": None, "raw": data}
    return {"codes": sorted(set(data["categories"]) - {"ok"}), "verdict": data.get("verdict"), "exit": rc,
            "segments": {int(s["seq"]): s["status"] for s in data.get("segments", [])},
            "problems": data.get("problems")}


def compared(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["codes"], r["verdict"], r["exit"], r["segments"])


def write_session(data_dir: Path, files: dict[str, bytes]) -> None:
    spool = data_dir / "spool" / SID
    spool.mkdir(parents=True)
    for name, data in files.items():
        (spool / name).write_bytes(data)


# --------------------------------------------------------------------------------------------
# fixtures: an isolated data dir and policy; the product as a black box


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("specverify")
    (base / "policy.toml").write_text(POLICY, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STATION_KEYRING_SERVICE", "specverify-" + uuid.uuid4().hex)
        mp.delenv("STATION_HOME", raising=False)
        mp.delenv("STATION_POLICY", raising=False)
        yield base


@pytest.fixture
def product(work: Path, capsys: pytest.CaptureFixture[str]) -> Callable[[dict[str, bytes], list[str]], dict[str, Any]]:
    """``station verify`` in-process (``station.cli.main``), used only through its arguments and stdout."""
    from station.cli import main

    def run(files: dict[str, bytes], trust: list[str]) -> dict[str, Any]:
        data_dir = work / uuid.uuid4().hex
        write_session(data_dir, files)
        args = ["verify", SID, "--json", "--data-dir", str(data_dir), "--policy", str(work / "policy.toml")]
        for key in trust:
            args += ["--trust", key]
        capsys.readouterr()
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr().out
        shutil.rmtree(data_dir, ignore_errors=True)
        return product_result(out, int(rc or 0))

    return run


def cli_env() -> dict[str, str]:
    """The command line's environment: no keyring daemon reachable, a keyring service of its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DBUS_SESSION_BUS_ADDRESS", "STATION_HOME", "STATION_POLICY")}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    env["STATION_KEYRING_SERVICE"] = "specverify-" + uuid.uuid4().hex
    return env


@pytest.fixture(scope="module")
def cli_vector_results(work: Path) -> dict[str, dict[str, Any]]:
    """Every vector through ``python -m station.cli verify`` (run two at a time)."""
    env = cli_env()

    def one(case: str) -> tuple[str, dict[str, Any]]:
        data_dir = work / f"cli-{case}"
        write_session(data_dir, load_case(case))
        proc = subprocess.run(
            [sys.executable, "-m", "station.cli", "verify", SID, "--json", "--data-dir", str(data_dir),
             "--policy", str(work / "policy.toml"), "--trust", load_expect(case)["trusted"]],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        res = product_result(proc.stdout, proc.returncode)
        res["stderr"] = proc.stderr[-2000:]
        return case, res

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        return dict(pool.map(one, CASES))


# --------------------------------------------------------------------------------------------
# a: the vectors' expectations


@pytest.mark.parametrize("case", CASES)
def test_vector_expectation(case: str) -> None:
    exp = load_expect(case)
    got = mine(load_case(case), [exp["trusted"]])
    codes = set(got["codes"])
    want = expected_codes(exp["expect"])
    if case.startswith("recovery-"):
        assert "crash-recovered" in codes, got
        codes -= RECOVERY_EXTRA
    assert codes == want, got
    assert got["verdict"] == exp["verdict"], got
    assert got["exit"] == {"intact": 0, "recovered": 4}.get(exp["verdict"], 3)


# --------------------------------------------------------------------------------------------
# b: the product's command line on the vectors


@pytest.mark.parametrize("case", CASES)
def test_vector_cli(case: str, cli_vector_results: dict[str, dict[str, Any]]) -> None:
    prod = cli_vector_results[case]
    ours = mine(load_case(case), [load_expect(case)["trusted"]])
    assert compared(prod) == compared(ours), {"product": prod, "spec_verify": ours}


# --------------------------------------------------------------------------------------------
# b: mutations of ok, truncated, recovered-at-boundary (the product in-process)

MUTATED_CASES = ("ok", "truncated", "recovered-at-boundary")


def _mutation_specs() -> list[tuple[str, str, tuple[Any, ...]]]:
    specs: list[tuple[str, str, tuple[Any, ...]]] = []
    for case in MUTATED_CASES:
        files = load_case(case)
        names = sorted(files)
        for n in names:
            specs.append((case, "delete", (n,)))
        for n in names:
            data = files[n]
            size = len(data)
            if n.endswith(".drseg"):
                h = int.from_bytes(data[10:14], "big")
                flips = [0, 7, 8, 9, 13, 14, 14 + h // 2, 14 + h - 1, 14 + h + 5, 38 + h + 3, 38 + h + 10,
                         38 + h + 24, size // 2, size - 1]
                cuts = [0, 5, 8, 12, 14 + h - 1, 38 + h, 38 + h + 21, 38 + h + 23, size // 2, size - 17, size - 1]
            else:
                flips = [0, 1, size // 4, size // 2, (3 * size) // 4, size - 2, size - 1]
                cuts = [0, 1, size // 2, size - 2, size - 1]
            specs += [(case, "flip", (n, p)) for p in sorted(set(flips)) if 0 <= p < size]
            specs += [(case, "cut", (n, c)) for c in sorted(set(cuts)) if 0 <= c < size]
        for n in names:
            if n.endswith(".json"):
                specs += [(case, op, (n,)) for op in ("indent", "no-lf", "extra-lf", "unsorted-ascii")]
        for i, a in enumerate(names):
            specs += [(case, "swap", (a, b)) for b in names[i + 1:]]
    return specs


MUTATIONS = _mutation_specs()


def apply_mutation(case: str, op: str, args: tuple[Any, ...]) -> dict[str, bytes]:
    files = load_case(case)
    name = args[0]
    if op == "delete":
        del files[name]
    elif op == "flip":
        data = bytearray(files[name])
        data[args[1]] ^= 0x01
        files[name] = bytes(data)
    elif op == "cut":
        files[name] = files[name][: args[1]]
    elif op == "indent":
        files[name] = json.dumps(json.loads(files[name]), sort_keys=True, indent=1,
                                 ensure_ascii=False).encode("utf-8") + b"\n"
    elif op == "no-lf":
        files[name] = files[name][:-1]
    elif op == "extra-lf":
        files[name] = files[name] + b"\n"
    elif op == "unsorted-ascii":
        obj = json.loads(files[name])
        files[name] = json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":")).encode() + b"\n"
    elif op == "swap":
        files[name], files[args[1]] = files[args[1]], files[name]
    else:  # pragma: no cover
        raise AssertionError(op)
    return files


def _mid(spec: tuple[str, str, tuple[Any, ...]]) -> str:
    case, op, args = spec
    return f"{case}:{op}:" + "@".join(str(a) for a in args)


@pytest.mark.parametrize("spec", MUTATIONS, ids=[_mid(s) for s in MUTATIONS])
def test_mutation(spec: tuple[str, str, tuple[Any, ...]], product: Callable[..., dict[str, Any]]) -> None:
    case, op, args = spec
    files = apply_mutation(case, op, args)
    trust = [load_expect(case)["trusted"]]
    prod = product(files, trust)
    ours = mine(files, trust)
    assert compared(prod) == compared(ours), {"product": prod, "spec_verify": ours}


# --------------------------------------------------------------------------------------------
# crafted sessions, re-signed with a test key of our own (trusted with --trust)

TEST_SK = SigningKey(bytes(range(32)))
TEST_KEY = "ed25519:" + base64.b64encode(bytes(TEST_SK.verify_key)).decode()
OTHER_SK = SigningKey(bytes(range(1, 33)))
REC = [{"fp": "0" * 32, "wrapped": base64.b64encode(b"\x01" * 80).decode()}]
DEL = object()


class Craft:
    """The ``ok`` vector's session, to be edited and then re-chained and re-signed by ``finish``."""

    def __init__(self, case: str = "ok") -> None:
        self.files = load_case(case)
        self.mans = {int(n[4:10]): json.loads(b) for n, b in self.files.items() if n.endswith(".manifest.json")}
        self.sess: dict[str, Any] | None = json.loads(self.files["session.json"])
        self.keep_prev: set[int] = set()
        self.keep_last = False
        self.unsigned: set[Any] = set()
        self.signer: dict[Any, tuple[SigningKey, str]] = {}

    def sign(self, obj: dict[str, Any], who: Any) -> None:
        obj.pop("sig", None)
        obj.pop("signer", None)
        if who in self.unsigned:
            return
        sk, text = self.signer.get(who, (TEST_SK, TEST_KEY))
        obj["signer"] = text
        obj["sig"] = base64.b64encode(sk.sign(sv.canonical(obj)).signature).decode()

    def setfile(self, pos: int, kind: str, data: bytes) -> None:
        name = f"seg-{pos:06d}.{kind}.drseg"
        self.files[name] = data
        entry = self.mans[pos]["files"].setdefault(kind, {"final": True, "messages": 1, "name": name})
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["size"] = len(data)

    def finish(self) -> dict[str, bytes]:
        for n in [n for n in self.files if n.endswith(".manifest.json")]:
            del self.files[n]
        prev = sv.ZERO_HASH
        for pos in sorted(self.mans):
            m = self.mans[pos]
            if pos not in self.keep_prev:
                m["prev"] = prev
            self.sign(m, pos)
            prev = hashlib.sha256(sv.canonical(m)).hexdigest()
            self.files[f"seg-{pos:06d}.manifest.json"] = sv.canonical(m) + b"\n"
        if self.sess is not None:
            if not self.keep_last:
                self.sess["last_hash"] = prev
            self.sign(self.sess, "sess")
            self.files["session.json"] = sv.canonical(self.sess) + b"\n"
        else:
            self.files.pop("session.json", None)
        return self.files


def drseg(header: Any, frames: tuple[tuple[bool, int], ...] = ((False, 20), (True, 17)),
          word0: bytes = b"\x00\x00\x00\x11", trailing: bytes = b"", raw_header: bytes | None = None,
          version: int = 1) -> bytes:
    """A sealed file the keyless walk can read (its tags are not real: nothing here decrypts)."""
    h = raw_header if raw_header is not None else sv.canonical(header)
    out = sv.MAGIC + version.to_bytes(2, "big") + len(h).to_bytes(4, "big") + h + b"\x07" * 24 + word0 + b"\x00" * 17
    for i, (final, c) in enumerate(frames):
        out += ((0x80000000 if final else 0) | c).to_bytes(4, "big") + bytes([i + 1]) * c
    return out + trailing


def hdr(seq: Any, kind: str, **kw: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"format": 1, "recipients": REC, "station": "vec-station", "session": SID, "seq": seq,
                         "kind": kind, "created_utc": "2026-12-07T17:51:34.610Z", "created_mono_ns": 5}
    h.update(kw)
    return {k: v for k, v in h.items() if v is not DEL}


def nest(n: int, leaf: Any, obj: bool = False) -> Any:
    v = leaf
    for _ in range(n):
        v = {"a": v} if obj else [v]
    return v


def _trunc0(c: Craft, data: bytes) -> None:
    c.setfile(2, "media", data)
    c.mans[2]["files"]["media"]["final"] = False
    c.mans[2]["truncated"] = {"media": {"at_message": 0, "note": "cut in its prefix"}}


def _del_sess_and_segment_files(c: Craft) -> None:
    c.mans.clear()
    for k in list(c.files):
        if k.endswith(".drseg"):
            del c.files[k]
    assert c.sess is not None
    c.sess["segments"] = 0


def _gap(c: Craft) -> None:
    c.mans[5] = c.mans.pop(3)
    c.mans[5]["seq"] = 5
    assert c.sess is not None
    c.sess["segments"] = 5
    for k in sv.KINDS:
        c.files[f"seg-000005.{k}.drseg"] = c.files.pop(f"seg-000003.{k}.drseg")


def _noncanonical_signer(c: Craft) -> None:
    alt = TEST_KEY[:-2] + chr(ord(TEST_KEY[-2]) + 1) + "="  # same 32 bytes, non-zero padding bits
    assert base64.b64decode(alt[8:]) == base64.b64decode(TEST_KEY[8:]) and alt != TEST_KEY
    c.signer[2] = (TEST_SK, alt)


def _recovered(c: Craft, recovery: Any, end_reason: str = "crash-recovered") -> None:
    assert c.sess is not None
    c.sess["end_reason"] = end_reason
    c.sess["recovery"] = recovery


def _finding(code: Any, seq: Any = None, kind: Any = None) -> dict[str, Any]:
    return {"code": code, "seq": seq, "kind": kind, "detail": "crafted"}


S = "session.json"
CRAFTED: dict[str, tuple[Callable[[Craft], None], str | None]] = {
    "resigned-ok": (lambda c: None, None),
    # step 1 / 2: members
    "sess-format-true": (lambda c: c.sess.__setitem__("format", True), None),
    "sess-type-segment": (lambda c: c.sess.__setitem__("type", "segment"), None),
    "sess-other-session": (lambda c: c.sess.__setitem__("session", "20261124T062500Z-0000dead"), None),
    "sess-no-station": (lambda c: c.sess.pop("station"), None),
    "sess-station-null": (lambda c: c.sess.__setitem__("station", None), None),
    "sess-station-int": (lambda c: c.sess.__setitem__("station", 5), None),
    "sess-station-other": (lambda c: c.sess.__setitem__("station", "other"), None),
    "sess-unsigned": (lambda c: c.unsigned.add("sess"), None),
    "sess-other-key": (lambda c: c.signer.__setitem__("sess", (OTHER_SK, "ed25519:" + base64.b64encode(
        bytes(OTHER_SK.verify_key)).decode())), None),
    "sess-float-member": (lambda c: c.sess.__setitem__("zzz", 1e16), None),
    "seg2-unsigned": (lambda c: c.unsigned.add(2), None),
    "seg2-signer-int": (lambda c: c.signer.__setitem__(2, (TEST_SK, 5)), None),  # type: ignore[dict-item]
    "seg2-signer-noncanonical": (_noncanonical_signer, None),
    "seg2-format-float": (lambda c: c.mans[2].__setitem__("format", 1.0), None),
    "seg2-format-str": (lambda c: c.mans[2].__setitem__("format", "1"), None),
    "seg2-format-absent": (lambda c: c.mans[2].pop("format"), None),
    "seg2-type-absent": (lambda c: c.mans[2].pop("type"), None),
    "seg2-other-session": (lambda c: c.mans[2].__setitem__("session", "20261124T062500Z-0000dead"), None),
    "seg1-other-station-no-sess-station": (lambda c: (c.sess.pop("station"), c.mans[1].__setitem__(
        "station", "other")), None),
    "seg2-seq9": (lambda c: c.mans[2].__setitem__("seq", 9), None),
    "seg2-seq9-wrong-type": (lambda c: c.mans[2].update(seq=9, type="bogus"), None),
    "seg2-seq9-bad-format": (lambda c: c.mans[2].update(seq=9, format=2), None),
    "seg2-seq-string": (lambda c: c.mans[2].__setitem__("seq", "2"), None),
    "seg1-seq-true": (lambda c: c.mans[1].__setitem__("seq", True), None),
    "seg3-seq2-duplicate": (lambda c: c.mans[3].__setitem__("seq", 2), None),
    "seg2-seq3-duplicate": (lambda c: (c.mans[2].__setitem__("seq", 3), c.mans[3].__setitem__("seq", 3)), None),
    "manifest-not-object": (lambda c: c.files.__setitem__("seg-000002.manifest.json", b"[1]\n"), None),
    "session-json-not-object": (lambda c: c.files.__setitem__(S, b'"x"\n'), None),
    "manifest-position-0": (lambda c: c.files.__setitem__("seg-000000.manifest.json",
                                                          c.files["seg-000001.manifest.json"]), None),
    "hidden-tmp-file": (lambda c: c.files.__setitem__(".seg-000004.manifest.json.tmp", b"junk"), None),
    "unlisted-drseg-beyond": (lambda c: c.files.__setitem__("seg-000004.media.drseg", b"junk"), None),
    "unlisted-drseg-qc": (lambda c: c.files.__setitem__("seg-000002.qc.drseg", b"junk"), None),
    "session-open-resigned": (lambda c: setattr(c, "sess", None), None),
    "session-open-seg1-other-station": (lambda c: (setattr(c, "sess", None), c.mans[1].__setitem__(
        "station", "other")), None),
    # step 3: count and chain
    "segments-5": (lambda c: c.sess.__setitem__("segments", 5), None),
    "segments-2-lasthash-zero": (lambda c: (c.sess.__setitem__("segments", 2), setattr(c, "keep_last", True),
                                            c.sess.__setitem__("last_hash", sv.ZERO_HASH)), None),
    "segments-2": (lambda c: c.sess.__setitem__("segments", 2), None),
    "segments-true": (lambda c: c.sess.__setitem__("segments", True), None),
    "segments-minus-1": (lambda c: c.sess.__setitem__("segments", -1), None),
    "segments-float": (lambda c: c.sess.__setitem__("segments", 3.0), None),
    "segments-0-none": (_del_sess_and_segment_files, None),
    "segments-0-none-bad-last": (lambda c: (_del_sess_and_segment_files(c), setattr(c, "keep_last", True),
                                            c.sess.__setitem__("last_hash", "1" * 64)), None),
    "segments-0-with-manifests": (lambda c: (c.sess.__setitem__("segments", 0), setattr(c, "keep_last", True),
                                             c.sess.__setitem__("last_hash", sv.ZERO_HASH)), None),
    "gap-1-2-5": (_gap, None),
    "prev-1-wrong": (lambda c: (c.mans[1].__setitem__("prev", "1" * 64), c.keep_prev.add(1)), None),
    "prev-2-wrong": (lambda c: (c.mans[2].__setitem__("prev", "1" * 64), c.keep_prev.add(2)), None),
    "prev-2-null": (lambda c: (c.mans[2].__setitem__("prev", None), c.keep_prev.add(2)), None),
    "prev-3-after-bad-format-2": (lambda c: (c.mans[2].__setitem__("format", "1"), c.mans[3].__setitem__(
        "prev", "1" * 64), c.keep_prev.add(3)), None),
    "prev-3-after-reordered-2": (lambda c: (c.mans[2].__setitem__("session", "x"), c.mans[3].__setitem__(
        "prev", "1" * 64), c.keep_prev.add(3)), None),
    "prev-3-after-unsigned-2": (lambda c: (c.unsigned.add(2), c.mans[3].__setitem__("prev", "1" * 64),
                                           c.keep_prev.add(3)), None),
    "last-hash-wrong": (lambda c: (setattr(c, "keep_last", True), c.sess.__setitem__("last_hash", "1" * 64)), None),
    "last-hash-wrong-seg3-altered": (lambda c: (setattr(c, "keep_last", True), c.sess.__setitem__(
        "last_hash", "1" * 64), c.mans[3].__setitem__("type", "x")), None),
    # step 4: files
    "files-empty": (lambda c: c.mans[2].__setitem__("files", {}), None),
    "files-list": (lambda c: c.mans[2].__setitem__("files", []), None),
    "files-absent": (lambda c: c.mans[2].pop("files"), None),
    "files-kind-qc": (lambda c: c.mans[2]["files"].__setitem__("qc", dict(c.mans[2]["files"]["media"])), None),
    "entry-not-object": (lambda c: c.mans[2]["files"].__setitem__("media", "x"), None),
    "entry-size-string": (lambda c: c.mans[2]["files"]["media"].update(
        size=str(c.mans[2]["files"]["media"]["size"])), None),
    "entry-sha-upper": (lambda c: c.mans[2]["files"]["media"].update(
        sha256=c.mans[2]["files"]["media"]["sha256"].upper()), None),
    "entry-wrong-name-and-missing": (lambda c: (c.mans[2]["files"]["media"].update(name="x"),
                                                c.files.pop("seg-000002.media.drseg")), None),
    "final-absent": (lambda c: c.mans[2]["files"]["media"].pop("final"), None),
    "final-null": (lambda c: c.mans[2]["files"]["media"].update(final=None), None),
    "final-false-file-closed": (lambda c: c.mans[2]["files"]["media"].update(final=False), None),
    "truncated-entry-null": (lambda c: c.mans[2].__setitem__("truncated", {"media": None}), None),
    "truncated-entry-final-true": (lambda c: c.mans[2].__setitem__(
        "truncated", {"media": {"at_message": 5, "note": "x"}}), None),
    "truncated-list": (lambda c: c.mans[2].__setitem__("truncated", ["media"]), None),
    "at0-cut-in-prefix": (lambda c: _trunc0(c, c.files["seg-000002.media.drseg"][:20]), None),
    "at0-garbage": (lambda c: _trunc0(c, b"garbage!" * 3), None),
    "at0-unsupported-version": (lambda c: _trunc0(c, drseg(hdr(2, "media"), version=2)), None),
    "at0-valid-header-other-kind": (lambda c: _trunc0(c, drseg(hdr(2, "oplog"), frames=())), None),
    "at1-cut-in-prefix": (lambda c: (_trunc0(c, c.files["seg-000002.media.drseg"][:20]),
                                     c.mans[2]["truncated"]["media"].update(at_message=1)), None),
    "no-header-final-false": (lambda c: (c.setfile(2, "media", c.files["seg-000002.media.drseg"][:20]),
                                         c.mans[2]["files"]["media"].update(final=False)), None),
    "hdr-ok": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media"))), None),
    "hdr-no-station": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", station=DEL))), None),
    "hdr-no-session": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", session=DEL))), None),
    "hdr-no-seq": (lambda c: c.setfile(2, "media", drseg(hdr(DEL, "media"))), None),
    "hdr-no-kind": (lambda c: c.setfile(2, "media", drseg(hdr(2, DEL))), None),  # type: ignore[arg-type]
    "hdr-kind-qc": (lambda c: c.setfile(2, "media", drseg(hdr(2, "qc"))), None),
    "hdr-other-session": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", session="x"))), None),
    "hdr-extra-member": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz={"a": [1, 2]}))), None),
    "hdr-created-utc-free-text": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", created_utc="x"))), None),
    "hdr-float": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=0.5))), None),
    "hdr-int-2^63": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=2**63))), None),
    "hdr-int--2^63": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=-(2**63)))), None),
    "hdr-mono-bool": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", created_mono_ns=True))), None),
    "hdr-seq-0": (lambda c: c.setfile(2, "media", drseg(hdr(0, "media"))), None),
    "hdr-seq-true": (lambda c: c.setfile(2, "media", drseg(hdr(True, "media"))), None),
    "hdr-format-true": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", format=True))), None),
    "hdr-depth-15-list": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=nest(14, 1)))), None),
    "hdr-depth-16-list": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=nest(15, 1)))), None),
    "hdr-depth-16-object": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=nest(15, 1, True)))),
                            None),
    "hdr-depth-16-empty-list": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=nest(15, [])[0]))), None),
    "hdr-depth-17-list": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", zzz=nest(16, 1)))), None),
    "hdr-recipients-empty": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", recipients=[]))), None),
    "hdr-wrapped-79": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", recipients=[
        {"fp": "0" * 32, "wrapped": base64.b64encode(b"\x01" * 79).decode()}]))), None),
    "hdr-wrapped-pad-bits": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", recipients=[
        {"fp": "0" * 32, "wrapped": REC[0]["wrapped"][:-2] + "F="}]))), None),
    "hdr-fp-upper": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", recipients=[
        {"fp": "A" * 32, "wrapped": REC[0]["wrapped"]}]))), None),
    "hdr-recipient-extra-member": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media", recipients=[
        {"fp": "a" * 32, "wrapped": REC[0]["wrapped"], "x": 1}]))), None),
    "hdr-escaped-slash": (lambda c: c.setfile(2, "media", drseg(None, raw_header=sv.canonical(
        hdr(2, "media")).replace(b"vec-station", b"vec\\/station"))), None),
    "hdr-duplicate-name": (lambda c: c.setfile(2, "media", drseg(None, raw_header=sv.canonical(
        hdr(2, "media"))[:-1] + b',"station":"vec-station"}')), None),
    "hdr-bom": (lambda c: c.setfile(2, "media", drseg(None, raw_header=b"\xef\xbb\xbf" + sv.canonical(
        hdr(2, "media")))), None),
    "hdr-trailing-space": (lambda c: c.setfile(2, "media", drseg(None, raw_header=sv.canonical(
        hdr(2, "media")) + b" ")), None),
    "walk-bytes-after-final": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media"), trailing=b"\x00")), None),
    "walk-no-final-signed-final": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media"),
                                                                         frames=((False, 20),))), None),
    "walk-c-16": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media"), frames=((False, 20), (True, 16)))), None),
    "walk-word0-final": (lambda c: c.setfile(2, "media", drseg(hdr(2, "media"), word0=b"\x80\x00\x00\x11",
                                                               frames=())), None),
    "walk-header-only-final-false": (lambda c: (c.setfile(2, "media", drseg(hdr(2, "media"), frames=())),
                                                c.mans[2]["files"]["media"].update(final=False)), None),
    "swapped-hdr-no-seq": (lambda c: c.files.__setitem__("seg-000002.media.drseg", drseg(hdr(DEL, "media"))), None),
    "swapped-hdr-other-seq": (lambda c: c.files.__setitem__("seg-000002.media.drseg", drseg(hdr(3, "media"))), None),
    "swapped-hdr-other-kind": (lambda c: c.files.__setitem__("seg-000002.media.drseg", drseg(hdr(2, "oplog"))), None),
    "swapped-hdr-other-session": (lambda c: c.files.__setitem__("seg-000002.media.drseg",
                                                                drseg(hdr(2, "media", session="x"))), None),
    "swapped-no-header": (lambda c: c.files.__setitem__("seg-000002.media.drseg", b"junk"), None),
    # step 5: recovery
    "recovery-no-findings": (lambda c: _recovered(c, {}), None),
    "recovery-empty-findings": (lambda c: _recovered(c, {"findings": []}), None),
    "recovery-unknown-code": (lambda c: _recovered(c, {"findings": [_finding("bogus")]}), None),
    "recovery-code-int": (lambda c: _recovered(c, {"findings": [_finding(5, 2, "media")]}), None),
    "recovery-finding-seq-99": (lambda c: _recovered(c, {"findings": [_finding("recovery-cut", 99, "media")]}), None),
    "recovery-finding-seq-2": (lambda c: _recovered(c, {"findings": [_finding("recovery-cut", 2, "media")]}), None),
    "recovery-finding-seq-string": (lambda c: _recovered(c, {"findings": [_finding("recovery-cut", "2")]}), None),
    "recovery-finding-not-object": (lambda c: _recovered(c, {"findings": ["recovery-cut"]}), None),
    "recovery-findings-string": (lambda c: _recovered(c, {"findings": "x"}), None),
    "recovery-findings-string-normal-end": (lambda c: _recovered(c, {"findings": "x"}, "normal"), None),
    "recovery-finding-normal-end": (lambda c: _recovered(c, {"findings": [_finding("recovery-cut", 2)]},
                                                         "normal"), None),
    "recovery-null-normal-end": (lambda c: _recovered(c, None, "normal"), None),
    "recovery-null": (lambda c: _recovered(c, None), None),
    "recovery-list": (lambda c: _recovered(c, []), None),
    "crash-recovered-without-recovery": (lambda c: c.sess.__setitem__("end_reason", "crash-recovered"), None),
}


def _crafted_params() -> list[Any]:
    out = []
    for name, (_fn, reason) in CRAFTED.items():
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


def crafted_files(name: str) -> dict[str, bytes]:
    c = Craft()
    CRAFTED[name][0](c)
    return c.finish()


@pytest.mark.parametrize("name", _crafted_params())
def test_crafted(name: str, product: Callable[..., dict[str, Any]]) -> None:
    files = crafted_files(name)
    prod = product(files, [TEST_KEY])
    ours = mine(files, [TEST_KEY])
    assert compared(prod) == compared(ours), {"product": prod, "spec_verify": ours}


# --------------------------------------------------------------------------------------------
# the independent verifier alone: approved keys (10.3; the CLI's --trust takes pinned keys only),
# canonical JSON (3) and the walk (2.6)


@pytest.mark.parametrize(("trust", "verdict"), [
    ([TEST_KEY], "intact"),
    (["vec-station=" + TEST_KEY], "intact"),
    (["other-station=" + TEST_KEY], "untrusted"),
    (["other-station=" + TEST_KEY, "vec-station=" + TEST_KEY], "intact"),
    ([], "untrusted"),
])
def test_approved_keys(trust: list[str], verdict: str) -> None:
    got = mine(crafted_files("resigned-ok"), trust)
    assert got["verdict"] == verdict
    assert set(got["codes"]) == (set() if verdict == "intact" else {"untrusted"})


def test_canonical_json_examples() -> None:
    assert sv.canonical({"b": [0.1, 1e-07, 1e16], "a": "\x00\b\t\n\f\r\"\\\x7f/é"}) == (
        '{"a":"\\u0000\\b\\t\\n\\f\\r\\"\\\\\x7f/é","b":[0.1,1e-07,1e+16]}').encode()
    assert sv.parse_canonical(b'{"a":1}\n', b"\n") == (True, {"a": 1})
    for bad in (b'{"a":1}', b'{"a": 1}\n', b'{"a":1,"a":1}\n', b'{"a":"\\/"}\n', b'{"a":NaN}\n',
                b'\xef\xbb\xbf{"a":1}\n', b'{"b":1,"a":2}\n', b'{"a":"\\u0041"}\n', b'{"a":1.00}\n'):
        assert sv.parse_canonical(bad, b"\n")[0] is False, bad


def test_walk_cut_points() -> None:
    data = drseg(hdr(1, "media"), frames=((False, 20), (True, 17)))
    h = int.from_bytes(data[10:14], "big")
    full = sv.walk(data)
    assert (full.status, full.messages, full.good_bytes, full.final, full.trailing) == ("ok", 3, len(data), True, 0)
    for cut in range(len(data)):
        w = sv.walk(data[:cut])
        assert w.status == "truncated"
        if cut < 38 + h + 21:
            assert (w.messages, w.good_bytes) == (0, 0)
        elif cut < 38 + h + 21 + 24:
            assert (w.messages, w.good_bytes) == (1, 38 + h + 21)
        else:
            assert (w.messages, w.good_bytes) == (2, 38 + h + 21 + 24)
    assert sv.walk(b"DRSEX").status == "bad header"
    assert sv.walk(data[:8] + b"\x00\x02").status == "unsupported format"
    assert sv.walk(data + b"x").status == "bad tag"
