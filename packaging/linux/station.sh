#!/bin/sh
# /usr/bin/station: runs the bundled DualRec Station (installed by the dualrec-station package).
# The site policy is /etc/dualrec/policy.toml (left to the administrator); STATION_POLICY or
# --policy FILE override it.
exec /opt/dualrec/station "$@"
