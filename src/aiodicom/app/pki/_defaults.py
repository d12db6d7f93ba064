"""The PKI's defaults, in a module without cryptography: `aiodicom pki`'s parser shows them
and every `aiodicom` command builds that parser, `aiodicom serve` included."""

from __future__ import annotations

KEY_TYPES = ("ec", "rsa")
"""Key types `init` and `issue` make."""
LEAF_DAYS = 825
"""Default validity of a server or client certificate, in days."""
CRL_DAYS = 30
"""Default validity (next update) of a CRL, in days."""
DICOM_TLS_PORT = 2762
"""The DICOM TLS port (PS3.15 B.1), for the example commands of a client bundle."""
