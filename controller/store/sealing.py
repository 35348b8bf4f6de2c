"""Secrets the controller must read back (agent tokens, which it sends to the agents), encrypted at
rest with a key derived from the controller's secret key.

A database copied off the host, a backup, or a query log then shows only ciphertext; someone with
the database and the secret_key_file still gets the tokens (the controller itself must). The key is
derived with HKDF-SHA256 from the secret key and a purpose label, so it is used for nothing else
(the session cookies and the confirmation links derive their own). A sealed value is
`sealed:v1:` followed by a Fernet token (AES-128-CBC with HMAC-SHA256, base64 text), so that
a value stored in clear by an older controller is told apart and sealed at the next start.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "sealed:v1:"
AGENT_TOKEN_PURPOSE = b"edgebed agent tokens v1"


class SealError(Exception):
    """A stored value cannot be opened: sealed with another secret key, or damaged."""


def derive_key(secret_key: bytes, purpose: bytes, length: int = 32) -> bytes:
    """`length` bytes derived from the controller's secret key for one `purpose` (HKDF-SHA256,
    no salt: the secret key is already uniformly random)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(secret_key)


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


class Sealer:
    """Seals and opens text with the key derived from `secret_key` for `purpose`."""

    def __init__(self, secret_key: bytes, purpose: bytes = AGENT_TOKEN_PURPOSE) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret_key, purpose)))

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"

    def seal(self, plaintext: str) -> str:
        """The text as it is stored: SEALED_PREFIX + a Fernet token (a fresh IV every time, so
        one token sealed twice gives two different values)."""
        return SEALED_PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def unseal(self, stored: str) -> str:
        """The plaintext of a value seal() made. SealError when it is not sealed or when this key
        does not open it; the message never contains the value."""
        if not is_sealed(stored):
            raise SealError("the value is not sealed")
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SealError("the value was sealed with another secret key, or is damaged") from None
