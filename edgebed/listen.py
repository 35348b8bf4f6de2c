"""Taking the `listen` address before anything else starts, so that a port in use stops start-up
with one line instead of a traceback (the controller) or a second line logged by gRPC's core
(the agent)."""

from __future__ import annotations

import socket

from edgebed.config import split_host_port


def _addresses(listen: str) -> list[tuple[int, tuple]]:
    """(family, socket address) of every address `listen` ('host:port') resolves to; OSError
    (socket.gaierror) when the host does not resolve."""
    host, port = split_host_port(listen)
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return [(family, address) for family, _, _, _, address in found]


def _bound(family: int, address: tuple) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As servers do: a port left in TIME_WAIT by the previous run is free, one that another
        # process listens on is not (Linux refuses two listeners without SO_REUSEPORT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def listening_socket(listen: str, backlog: int = 128) -> socket.socket:
    """A socket bound to the first address `listen` resolves to, listening; OSError (with its
    strerror: "Address already in use", "Cannot assign requested address", ...) when it cannot
    be had. The caller hands it to the server and closes it when done."""
    family, address = _addresses(listen)[0]
    sock = _bound(family, address)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def listen_problem(listen: str) -> str | None:
    """Why `listen` cannot be listened on now ("address already in use", ...), or None when at
    least one of its addresses can (a server binding every address needs one). Port 0 always can."""
    _, port = split_host_port(listen)
    if port == 0:
        return None
    try:
        addresses = _addresses(listen)
    except OSError as exc:
        return f"the host does not resolve ({exc.strerror or exc})"
    problems = []
    for family, address in addresses:
        try:
            _bound(family, address).close()
            return None
        except OSError as exc:
            problems.append((exc.strerror or str(exc)).lower())
    return problems[0] if problems else "the address resolves to nothing"
