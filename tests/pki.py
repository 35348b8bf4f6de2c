"""Certificates for the TLS tests, made with edgebed's own `edgebed.tls` helpers."""

from __future__ import annotations

from pathlib import Path


def make_pki(folder: Path, *, agent_dns: tuple[str, ...] = ()) -> Path:
    """With edgebed.tls, in `folder`: a CA (ca.pem/key), an agent certificate for 127.0.0.1 (and
    `agent_dns`) (agent.pem/key), a client certificate (controller.pem/key); and in folder/other
    an unrelated CA with a client and an agent certificate of its own."""
    from edgebed.tls import create_ca, issue

    create_ca(folder)
    issue(folder, "agent", ips=["127.0.0.1"], dns=agent_dns)
    issue(folder, "controller", client=True)
    create_ca(folder / "other")
    issue(folder / "other", "controller", client=True)
    issue(folder / "other", "agent", ips=["127.0.0.1"])
    return folder
