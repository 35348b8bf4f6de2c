"""The images environments name, in the agent's image_dir: where a node fetches each one, and the
size and sha256 of the raw image it holds once decompressed.

An environment's `image` is a file name relative to image_dir ("raspios-lite.img.xz",
"2024/ubuntu.img.zst"), or an absolute path inside it. Its compression follows its suffix:
.zst, .xz, .gz, anything else raw. A node fetches it from `image_url` + its relative path.

The size and sha256 of the raw image are what a card must hold after a copy: the node reads
exactly `size` bytes back and hashes them, the agent compares. The agent computes them once per
image file, by decompressing it as the node does, and keeps them in its database (through the
driver's load_state/save_state) keyed by the file's path, size and modification time, so that a
replaced file is hashed again and an unchanged one never is, across restarts too.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from edgebed.nodetypes.base import DriverError, Environment

log = logging.getLogger(__name__)

STATE_KEY = "real.image_sums"
CHUNK = 1 << 20
COMPRESSIONS = {".zst": "zst", ".xz": "xz", ".gz": "gz"}

LoadState = Callable[[str], Awaitable[str | None]]
SaveState = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class ImageFile:
    """An environment's image: `path` on the agent, `relative` to image_dir, `compression` (zst,
    xz, gz or raw), and the `url` the node fetches it from."""

    path: Path
    relative: str
    compression: str
    url: str


@dataclass(frozen=True)
class ImageDigest:
    """The raw (decompressed) image: its size in bytes and its sha256 in hex."""

    size: int
    sha256: str


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def compression_of(name: str) -> str:
    return COMPRESSIONS.get(Path(name).suffix, "raw")


@contextmanager
def _raw_stream(path: Path, compression: str) -> Iterator[_Reader]:
    """The decompressed bytes of `path`. zstd has no module in Python 3.11's standard library:
    the zstd program decompresses those, as it does on the node."""
    if compression == "xz":
        with lzma.open(path, "rb") as stream:
            yield stream
    elif compression == "gz":
        with gzip.open(path, "rb") as stream:
            yield stream
    elif compression == "zst":
        program = shutil.which("zstd")
        if program is None:
            raise DriverError(f"zstd is not installed on the agent's host: it cannot hash {path}")
        with subprocess.Popen([program, "-dcq", "--", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as process:
            assert process.stdout is not None
            yield process.stdout
            process.stdout.close()
            if process.wait() != 0:
                error = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
                raise DriverError(f"zstd cannot decompress {path}: {error[-200:]}")
    else:
        with path.open("rb") as stream:
            yield stream


def digest_file(path: Path, compression: str) -> ImageDigest:
    """Size and sha256 of `path` decompressed (blocking: run it in a thread). Raises
    DriverError when the file cannot be read or decompressed."""
    digest = hashlib.sha256()
    size = 0
    try:
        with _raw_stream(path, compression) as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except (OSError, lzma.LZMAError, EOFError) as exc:
        raise DriverError(f"cannot read image {path}: {exc}") from None
    return ImageDigest(size, digest.hexdigest())


class ImageCatalog:
    def __init__(self, image_dir: str, image_url: str, *, load_state: LoadState,
                 save_state: SaveState) -> None:
        self._dir = Path(image_dir)
        self._url = image_url.rstrip("/")
        self._load = load_state
        self._save = save_state
        self._known: dict[str, dict] | None = None
        # Relative path -> the computation running for it: nodes deploying one image at once
        # share one.
        self._running: dict[str, asyncio.Task[ImageDigest]] = {}
        self._lock = asyncio.Lock()

    def locate(self, environment: Environment) -> ImageFile:
        """The image file of `environment`. DriverError when it names nothing in image_dir."""
        name = environment.image.strip()
        if not name:
            raise DriverError(f"environment {environment.name!r} names no image")
        if "://" in name:
            raise DriverError(
                f"environment {environment.name!r}: image {name!r} is a URL; name a file in "
                f"image_dir ({self._dir}) instead"
            )
        root = self._dir.resolve()
        path = Path(name) if os.path.isabs(name) else root / name
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise DriverError(
                f"environment {environment.name!r}: image {name!r} is not in image_dir ({self._dir})"
            )
        if not resolved.is_file():
            raise DriverError(
                f"environment {environment.name!r}: image {resolved} does not exist"
            )
        relative = resolved.relative_to(root).as_posix()
        return ImageFile(
            path=resolved,
            relative=relative,
            compression=compression_of(relative),
            url=f"{self._url}/{quote(relative)}",
        )

    async def digest(self, image: ImageFile) -> ImageDigest:
        """Size and sha256 of the raw image, computed at most once per version of the file."""
        try:
            stat = image.path.stat()
        except OSError as exc:
            raise DriverError(f"image {image.path}: {exc.strerror}") from None
        stamp = {"file_size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        known = await self._entries()
        entry = known.get(image.relative)
        if entry is not None and all(entry.get(key) == value for key, value in stamp.items()):
            return ImageDigest(int(entry["size"]), str(entry["sha256"]))
        task = self._running.get(image.relative)
        if task is None:
            task = asyncio.create_task(self._compute(image, stamp))
            self._running[image.relative] = task
            task.add_done_callback(lambda _: self._running.pop(image.relative, None))
        # Shielded: one node's step being cancelled must not stop the others' computation.
        return await asyncio.shield(task)

    async def _compute(self, image: ImageFile, stamp: dict) -> ImageDigest:
        log.info("computing the size and sha256 of image %s", image.path)
        digest = await asyncio.to_thread(digest_file, image.path, image.compression)
        async with self._lock:
            known = await self._entries()
            # Files that went away take their entries with them.
            for relative in [name for name in known if not (self._dir / name).is_file()]:
                del known[relative]
            known[image.relative] = {**stamp, "size": digest.size, "sha256": digest.sha256}
            await self._save(STATE_KEY, json.dumps(known, sort_keys=True))
        log.info("image %s: %d bytes raw, sha256 %s", image.relative, digest.size, digest.sha256)
        return digest

    async def _entries(self) -> dict[str, dict]:
        if self._known is None:
            saved = await self._load(STATE_KEY)
            try:
                loaded = json.loads(saved) if saved else {}
            except ValueError:
                loaded = {}
            self._known = loaded if isinstance(loaded, dict) else {}
        return self._known
