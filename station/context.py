"""Where a station's state lives, built once per process from the command line and environment.

This is the composition root's input: the data dir, the effective policy, the keyring and the
audit log. ``station/app.py`` wires the long-running services from it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from station import logs, policy
from station.secrets import SecretStore


def default_data_dir() -> Path:
    env = os.environ.get("STATION_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dualrec"


@dataclass
class Context:
    data_dir: Path = field(default_factory=default_data_dir)
    policy_path: Path | None = None
    json: bool = False

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().absolute()
        if self.policy_path is None:
            self.policy_path = policy.resolve_site_path(None)

    @cached_property
    def policy(self) -> policy.Policy:
        return policy.load(self.policy_path, self.data_dir / "station.toml")

    @cached_property
    def secrets(self) -> SecretStore:
        return SecretStore()

    @cached_property
    def audit(self) -> logs.AuditLog:
        return logs.AuditLog(self.data_dir / "audit" / "audit.log")

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def station_id(self) -> str:
        sid = self.policy.station.id
        if sid:
            return str(sid)
        host = socket.gethostname().split(".")[0] or "station"
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in host)[:64]

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.spool_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            if d.stat().st_mode & 0o077 and d.stat().st_uid == os.getuid():
                d.chmod(0o700)  # made by someone else (an installer, a shell): the station's own
