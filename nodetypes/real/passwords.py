"""The SHA-512 crypt password hash (`$6$salt$hash`), as /etc/shadow holds it.

The agent hashes the default user's password itself and sends the node only the hash, through
stdin to `chpasswd -e`: the password never reaches the node, a command line or a log. Python's
`crypt` module is deprecated (removed in 3.13) and depends on the system's libcrypt, so this is
Ulrich Drepper's published algorithm ("Unix crypt using SHA-256 and SHA-512", the glibc and
OpenSSL `passwd -6` scheme), checked against `openssl passwd -6` by the tests.
"""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROUNDS = 5000  # the scheme's default, written without a rounds= field
SALT_LENGTH = 16  # the scheme's longest salt

# The scheme's permutation of the 64 digest bytes into 22 groups of 3 (the last group holds one).
_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54),
    (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60),
    (40, 61, 19), (62, 20, 41),
)


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _encode(digest: bytes) -> str:
    out = []
    for high, middle, low in _ORDER:
        word = (digest[high] << 16) | (digest[middle] << 8) | digest[low]
        for _ in range(4):
            out.append(_ALPHABET[word & 0x3F])
            word >>= 6
    word = digest[63]
    for _ in range(2):
        out.append(_ALPHABET[word & 0x3F])
        word >>= 6
    return "".join(out)


def sha512_crypt(password: str, salt: str | None = None) -> str:
    """`$6$<salt>$<hash>` of `password` (UTF-8) with 5000 rounds; a random 16-character salt
    unless `salt` is given (tests). Raises ValueError for a salt outside the scheme's alphabet."""
    if salt is None:
        salt = "".join(secrets.choice(_ALPHABET) for _ in range(SALT_LENGTH))
    if not salt or any(char not in _ALPHABET for char in salt):
        raise ValueError("a salt is 1 to 16 characters of [./0-9A-Za-z]")
    key = password.encode()
    salt_bytes = salt[:SALT_LENGTH].encode()

    alternate = hashlib.sha512(key + salt_bytes + key).digest()
    context = hashlib.sha512(key + salt_bytes)
    context.update(_repeat(alternate, len(key)) if key else b"")
    length = len(key)
    while length:
        context.update(alternate if length & 1 else key)
        length >>= 1
    digest = context.digest()

    key_sequence = _repeat(hashlib.sha512(key * len(key)).digest(), len(key)) if key else b""
    salt_sequence = _repeat(hashlib.sha512(salt_bytes * (16 + digest[0])).digest(), len(salt_bytes))

    for round_ in range(ROUNDS):
        step = hashlib.sha512()
        step.update(key_sequence if round_ & 1 else digest)
        if round_ % 3:
            step.update(salt_sequence)
        if round_ % 7:
            step.update(key_sequence)
        step.update(digest if round_ & 1 else key_sequence)
        digest = step.digest()
    return f"$6${salt_bytes.decode()}${_encode(digest)}"
