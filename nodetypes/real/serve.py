"""`[real] serve_images = "host:port"`: the agent serves image_dir over HTTP itself, for a testbed
without a web server of its own. GET and HEAD of the files (Range requests too, sendfile), no
folder listings, no links followed out of image_dir. Nodes still fetch from `image_url`, which
must then point here.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from aiohttp import web

from edgebed.config import split_host_port

log = logging.getLogger(__name__)


class ImageServer:
    def __init__(self, image_dir: str, listen: str) -> None:
        self._dir = Path(image_dir)
        self._host, self._port = split_host_port(listen)
        self._runner: web.AppRunner | None = None
        self.port = self._port

    async def start(self) -> None:
        """Raises OSError when the address cannot be bound."""
        app = web.Application()
        app.router.add_static("/", self._dir, show_index=False, follow_symlinks=False)
        # Bound here, so that port 0 tells which port it got.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server((self._host, self._port), family=family)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = sock.getsockname()[1]
        log.info("serving images from %s on %s:%d", self._dir, self._host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
