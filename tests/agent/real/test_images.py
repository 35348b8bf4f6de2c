"""The images environments name: where a node fetches them, and the raw size and sha256 the card
must hold, computed once per version of a file and kept in the agent's database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from edgebed.nodetypes.base import DriverError, Environment
from edgebed.nodetypes.real.images import STATE_KEY, ImageCatalog, ImageDigest
from tests.agent.real.peers import require


class Saved:
    """The agent's driver state hooks, in memory; counts the writes."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    async def load(self, key: str) -> str | None:
        return self.values.get(key)

    async def save(self, key: str, value: str) -> None:
        self.values[key] = value
        self.writes += 1


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A 2 MiB random image, raw, .zst and .xz (compressed once per module: seconds under load)."""
    require("zstd", "xz")
    images = tmp_path_factory.mktemp("images")
    raw = os.urandom(2 * 1024 * 1024 + 512)
    (images / "pi.img").write_bytes(raw)
    subprocess.run(["zstd", "-q", str(images / "pi.img"), "-o", str(images / "pi.img.zst")], check=True)
    subprocess.run(["xz", "-q", "-k", "-0", str(images / "pi.img")], check=True)
    return images, ImageDigest(len(raw), hashlib.sha256(raw).hexdigest())


@pytest.fixture
def folder(tmp_path, pristine):
    """The test's own copy of the pristine images (tests change and add files)."""
    source, digest = pristine
    images = tmp_path / "images"
    shutil.copytree(source, images)
    return images, digest


def catalog(images, saved: Saved) -> ImageCatalog:
    return ImageCatalog(str(images), "http://10.0.0.1:8081/", load_state=saved.load, save_state=saved.save)


@pytest.mark.parametrize(("name", "compression"), [("pi.img", "raw"), ("pi.img.zst", "zst"), ("pi.img.xz", "xz")])
async def test_every_form_of_an_image_has_the_raw_images_digest(folder, name, compression) -> None:
    images, expected = folder
    image = catalog(images, Saved()).locate(Environment("e", image=name))
    assert (image.compression, image.url) == (compression, f"http://10.0.0.1:8081/{name}")
    assert await catalog(images, Saved()).digest(image) == expected


async def test_a_digest_is_computed_once_kept_and_computed_again_when_the_file_changes(folder) -> None:
    images, expected = folder
    saved = Saved()
    first = catalog(images, saved)
    image = first.locate(Environment("e", image=str(images / "pi.img.zst")))
    # Eight nodes deploying the same image at once share one computation.
    assert set(await asyncio.gather(*(first.digest(image) for _ in range(8)))) == {expected}
    assert saved.writes == 1 and "pi.img.zst" in json.loads(saved.values[STATE_KEY])
    # An agent restarted: the kept digest, no new computation.
    assert await catalog(images, saved).digest(image) == expected and saved.writes == 1
    # A new version of the file (another size or time): computed again.
    (images / "pi.img.zst").unlink()
    (images / "pi.img").write_bytes(b"\0" * 4096)
    subprocess.run(["zstd", "-q", str(images / "pi.img"), "-o", str(images / "pi.img.zst")], check=True)
    again = await catalog(images, saved).digest(image)
    assert again == ImageDigest(4096, hashlib.sha256(b"\0" * 4096).hexdigest()) and saved.writes == 2


async def test_an_image_outside_image_dir_or_missing_is_refused(folder, tmp_path) -> None:
    images, _ = folder
    images_catalog = catalog(images, Saved())
    (tmp_path / "elsewhere.img").write_bytes(b"x")
    for name, expected in [("../elsewhere.img", "is not in image_dir"),
                           (str(tmp_path / "elsewhere.img"), "is not in image_dir"),
                           ("absent.img", "does not exist"),
                           ("http://mirror/pi.img", "is a URL"), ("", "names no image")]:
        with pytest.raises(DriverError, match=expected):
            images_catalog.locate(Environment("e", image=name))


async def test_a_broken_compressed_image_is_a_driver_error(folder) -> None:
    images, _ = folder
    (images / "broken.img.xz").write_bytes(b"not xz at all")
    broken = catalog(images, Saved())
    with pytest.raises(DriverError, match="cannot read image"):
        await broken.digest(broken.locate(Environment("e", image="broken.img.xz")))
    (images / "broken.img.zst").write_bytes(b"not zstd either")
    with pytest.raises(DriverError, match="zstd cannot decompress"):
        await broken.digest(broken.locate(Environment("e", image="broken.img.zst")))
