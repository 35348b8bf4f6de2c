"""The password hash the agent sends to a node instead of the password: SHA-512 crypt, as
/etc/shadow and `openssl passwd -6` have it."""

from __future__ import annotations

import subprocess

import pytest

from edgebed.nodetypes.real.passwords import sha512_crypt
from tests.agent.real.peers import require


def test_the_published_test_vector() -> None:
    # From "Unix crypt using SHA-256 and SHA-512" (Drepper), the 5000-round case.
    assert sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoE"
        "OfaS35inz1"
    )


@pytest.mark.parametrize(
    "password", ["raspberry", "pässwörd mit Leerzeichen", "x" * 64, "y" * 129, "$6$:\\'\"`"]
)
def test_it_matches_openssl(password: str) -> None:
    require("openssl")
    salt = "Ab1./cd2Ef3Gh4Ij"
    # The password goes to openssl through stdin, as it would anywhere else.
    expected = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password.encode(),
        capture_output=True, check=True,
    ).stdout.decode().strip()
    assert sha512_crypt(password, salt) == expected


def test_a_random_salt_each_time_and_a_bad_salt_refused() -> None:
    first, second = sha512_crypt("same"), sha512_crypt("same")
    assert first != second and first.startswith("$6$") and len(first.split("$")[2]) == 16
    with pytest.raises(ValueError):
        sha512_crypt("pw", "bad salt")
