"""`[real] serve_images`: the agent serves image_dir over HTTP itself; nodes fetch with curl."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from edgebed.nodetypes.real.serve import ImageServer
from tests.agent.real.peers import require


async def curl(*args: str) -> tuple[int, bytes]:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-o", "-", "-w", "\\n%{http_code}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    body, _, code = out.rpartition(b"\n")
    return int(code), body


@pytest.fixture
async def served(tmp_path):
    require("curl")
    images = tmp_path / "images"
    (images / "2024").mkdir(parents=True)
    content = os.urandom(3 * 1024 * 1024 + 17)
    (images / "2024" / "pi.img.zst").write_bytes(content)
    (tmp_path / "secret").write_text("not an image")
    (images / "escape").symlink_to(tmp_path / "secret")
    server = ImageServer(str(images), "127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", content
    finally:
        await server.close()


async def test_files_ranges_and_nothing_else(served) -> None:
    url, content = served
    code, body = await curl(f"{url}/2024/pi.img.zst")
    assert code == 200 and hashlib.sha256(body).digest() == hashlib.sha256(content).digest()
    code, body = await curl("-r", "1000-1999", f"{url}/2024/pi.img.zst")
    assert code == 206 and body == content[1000:2000]
    # No folder listings, no link out of image_dir, nothing above it.
    assert (await curl(f"{url}/2024/"))[0] in (403, 404)
    assert (await curl(f"{url}/escape"))[0] in (403, 404)
    assert (await curl("--path-as-is", f"{url}/../secret"))[0] in (403, 404)
