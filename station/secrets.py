"""Secrets live in the OS keyring only: station signing key, storage credentials, API token,
reviewer identities. Nothing secret is written to the policy, the data dir or the logs.

Values are stored as text (binary keys base64-encoded). The keyring service name is
``dualrec-station`` unless ``STATION_KEYRING_SERVICE`` says otherwise (tests isolate with it).
"""

from __future__ import annotations

import base64
import os
import secrets as _secrets

import keyring
import keyring.backend
import keyring.errors

from station.errors import KeyringUnavailable, SecretMissing

SIGNING_KEY = "station-signing-key"
STORAGE_ACCESS_KEY = "storage-access-key-id"
STORAGE_SECRET_KEY = "storage-secret-access-key"
API_TOKEN = "local-api-token"
REVIEWER_IDENTITY = "reviewer-identity"
CUSTOMER_SALT = "customer-hash-salt"

_UNUSABLE = ("fail.Keyring", "null.Keyring", "chainer.ChainerBackend")


def default_service() -> str:
    return os.environ.get("STATION_KEYRING_SERVICE", "dualrec-station")


def backend_name() -> str:
    kr = keyring.get_keyring()
    return f"{type(kr).__module__}.{type(kr).__name__}"


class SecretStore:
    """Typed access to the station's secrets in the keyring."""

    def __init__(self, service: str | None = None) -> None:
        self.service = service or default_service()

    def check_backend(self) -> str:
        name = backend_name()
        kr = keyring.get_keyring()
        if any(name.endswith(u) for u in _UNUSABLE) and not getattr(kr, "backends", None):
            raise KeyringUnavailable(f"{name} (start a Secret Service such as gnome-keyring)")
        return name

    def get(self, name: str) -> str | None:
        try:
            return keyring.get_password(self.service, name)
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(str(exc)) from None

    def require(self, name: str, hint: str) -> str:
        value = self.get(name)
        if value is None:
            raise SecretMissing(name, hint)
        return value

    def set(self, name: str, value: str) -> None:
        try:
            keyring.set_password(self.service, name, value)
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(str(exc)) from None

    def delete(self, name: str) -> None:
        try:
            keyring.delete_password(self.service, name)
        except keyring.errors.PasswordDeleteError:
            pass
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(str(exc)) from None

    def get_bytes(self, name: str) -> bytes | None:
        value = self.get(name)
        return None if value is None else base64.b64decode(value)

    def set_bytes(self, name: str, value: bytes) -> None:
        self.set(name, base64.b64encode(value).decode("ascii"))

    def api_token(self, create: bool = True) -> str:
        token = self.get(API_TOKEN)
        if token is None and create:
            token = _secrets.token_urlsafe(32)
            self.set(API_TOKEN, token)
        if token is None:
            raise SecretMissing(API_TOKEN, "start the station once to create it")
        return token

    def customer_salt(self) -> bytes:
        salt = self.get_bytes(CUSTOMER_SALT)
        if salt is None:
            salt = _secrets.token_bytes(32)
            self.set_bytes(CUSTOMER_SALT, salt)
        return salt
