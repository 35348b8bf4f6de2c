"""A deliberately slow image server: `python -m tests.agent.real.slow_http DIR HOST PORT RATE`
serves DIR at RATE bytes per second per request, so that a test can act in the middle of a copy
(kill the agent) that the lab's own server would finish in half a second."""

from __future__ import annotations

import functools
import sys
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class SlowHandler(SimpleHTTPRequestHandler):
    rate = 4 * 1024 * 1024

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        chunk = 64 * 1024
        began, sent = time.monotonic(), 0
        while data := source.read(chunk):
            outputfile.write(data)
            sent += len(data)
            ahead = sent / self.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)

    def log_message(self, format: str, *args: object) -> None:
        return


def main(argv: list[str]) -> int:
    folder, host, port, rate = argv
    SlowHandler.rate = int(rate)
    handler = functools.partial(SlowHandler, directory=folder)
    with ThreadingHTTPServer((host, int(port)), handler) as server:
        print(f"serving {folder} on {host}:{server.server_address[1]}", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
