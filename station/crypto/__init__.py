"""Sealing: encrypted segment files, signed manifest chains, keys, verification.

Leaf package: imports nothing from recorder, uploader or ui. Formats: docs/format.md;
guarantees and limits: docs/security.md.
"""

from station.crypto.keys import (
                                 fingerprint,
                                 load_identities,
                                 load_signing_key,
                                 read_identity_file,
                                 read_recipient_file,
)
from station.crypto.sealed import (
                                 FORMAT_V1,
                                 SUPPORTED_FORMATS,
                                 Altered,
                                 BadHeader,
                                 BadTag,
                                 NoMatchingRecipient,
                                 SealedReader,
                                 SealedWriter,
                                 SealError,
                                 Truncated,
                                 UnsupportedFormat,
                                 WrongKey,
)
from station.crypto.session import SessionSealer, recover_session, recover_spool

__all__ = [
    "FORMAT_V1", "SUPPORTED_FORMATS", "Altered", "BadHeader", "BadTag", "NoMatchingRecipient",
    "SealError", "SealedReader", "SealedWriter", "SessionSealer", "Truncated",
    "UnsupportedFormat", "WrongKey", "fingerprint", "load_identities", "load_signing_key",
    "read_identity_file", "read_recipient_file", "recover_session", "recover_spool",
]
