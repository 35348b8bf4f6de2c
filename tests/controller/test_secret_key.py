"""The secret_key_file's formats, through the real command line: base64 text (what edgebed writes)
or raw random bytes; anything else stops with one line saying which format it needs."""

from __future__ import annotations

import base64
import os

import pytest

from edgebed.controller.settings import Settings
from tests.controller.test_cli import edgebed, one_line_error, write_config

KEY = bytes.fromhex("9f" * 8 + "03" * 8 + "a1b2c3d4" * 4)  # 32 bytes, not all printable ASCII


def settings_for(path) -> Settings:
    return Settings(listen="127.0.0.1:0", database="db", secret_key_file=str(path))


@pytest.mark.parametrize(
    "content",
    [
        KEY,
        base64.b64encode(KEY) + b"\n",
        base64.urlsafe_b64encode(KEY).rstrip(b"="),
        base64.encodebytes(KEY + KEY),  # 64 bytes over two lines: the first 32 are not the key
    ],
    ids=["raw-bytes", "base64-line", "urlsafe-unpadded", "base64-two-lines"],
)
def test_raw_bytes_and_base64_text_both_give_the_key(tmp_path, content):
    path = tmp_path / "secret.key"
    path.write_bytes(content)
    expected = KEY + KEY if len(content) > 60 else KEY
    assert settings_for(path).secret_key() == expected


@pytest.mark.slow
def test_a_secret_key_file_of_32_raw_random_bytes_is_accepted_by_the_commands(tmp_path):
    config = write_config(tmp_path)
    key_file = tmp_path / "var" / "secret.key"
    key_file.parent.mkdir()
    key_file.write_bytes(os.urandom(32))
    result = edgebed("admin", "create-user", "root@example.org", "--authorized", "--config", str(config),
                     stdin="a-long-password\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "created user root@example.org (authorized)\n"


BAD_KEYS = {
    "passphrase": (b"correct horse battery staple\n", "holds text that is not base64"),
    "short-base64": (base64.b64encode(b"x" * 16) + b"\n", "its base64 text decodes to 16 bytes, too short"),
    "short-raw": (b"\xff\x00" * 8, "holds 16 raw bytes, too short"),
    "bad-padding": (b"QUJDRA=\n" * 8, "holds malformed base64"),
    "empty": (b"\n", "is empty"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_a_secret_key_file_in_an_unexpected_format_says_which_format_it_needs(tmp_path, case):
    content, problem = BAD_KEYS[case]
    config = write_config(tmp_path)
    key_file = tmp_path / "var" / "secret.key"
    key_file.parent.mkdir()
    key_file.write_bytes(content)
    line = one_line_error(edgebed("controller", "--config", str(config)))
    assert line.startswith(f"edgebed: secret_key_file {key_file}: {problem}"), line
    assert line.endswith(
        "it needs base64 text of 32 or more random bytes (`head -c 32 /dev/urandom | base64`, as "
        "edgebed writes it) or 32 or more raw random bytes"
    ), line
    # The file is left as it was: nothing replaces a key the operator put there.
    assert key_file.read_bytes() == content
