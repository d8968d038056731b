"""DualRec Station: the domain core (sessions, policy, clock, operation log, crypto, spool, audit, CLI).

Nothing in this package imports Qt. The dependency rule is ``ui -> station -> {recorder, uploader}``;
``recorder`` and ``uploader`` may use station's leaf modules (errors, clock, crypto, policy) but
never ``ui``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dualrec-station")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
