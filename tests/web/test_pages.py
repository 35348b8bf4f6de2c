"""The user and admin pages' actions through plain HTTP: reserving N nodes by filter, the
configure form applied to several nodes, manage actions, and the admin pages acting through the
real agents (nodes added, renamed and deleted; environments put and removed; agents added,
reconnected and deleted)."""

from __future__ import annotations

import re
import time

from tests.web.conftest import ADMIN, BOB, client_for


def test_reserve_n_nodes_by_filter_then_configure_them_together(testbed):
    bob = client_for(testbed, BOB)
    page = bob.get("/reserve?f.type=sensor")
    assert page.status == 200 and page.text.count('name="nodes" value="sens-') == 3
    assert 'name="f.type" value="sensor"' in page.text  # the filter goes with the form
    # The page filters as the reservation does: `name` is the node's own name.
    by_name = bob.get("/reserve?f.name=sens-002").text
    assert re.findall(r'name="nodes" value="([^"]+)"', by_name) == ["sens-002"]
    start = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 86400 * 3))
    reserved = bob.post("/reserve", [("count", "2"), ("f.type", "sensor"), ("start", start),
                                     ("tz", "UTC"), ("duration_hours", "2")])
    assert reserved.status == 303, reserved.text[:300]
    names = re.findall(r"nodes=(sens-\d+)", reserved.location)
    assert len(names) == 2
    configure = bob.get(reserved.location).text
    for name in names:
        assert f'value="{name}" checked' in configure
    environment = re.search(r'name="prop.environment">\s*<option value="">[^<]*</option>\s*'
                            r'<option value="([^"]+)"', configure).group(1)
    done = bob.post("/configure", [("nodes", names[0]), ("nodes", names[1]), ("bin", "sensors"),
                                   ("prop.environment", environment)])
    assert done.status == 303 and done.location == "/manage"
    manage = bob.get("/manage").text
    assert 'data-bin="sensors"' in manage
    for name in names:
        assert f'data-node="{name}" data-status="ready"' in manage
    # Not started yet: deploying now is refused with the reason, extending is fine.
    refused = bob.post("/manage/action", [("nodes", names[0]), ("action", "deploy")])
    assert refused.status == 409 and "has not started yet" in refused.text
    assert bob.post("/manage/action", [("nodes", names[0]), ("action", "extend")]).status == 303
    # Destroying before the start cancels: the reservations are gone.
    assert bob.post("/manage/action", [("nodes", names[0]), ("nodes", names[1]),
                                       ("action", "destroy")]).status == 303
    assert not bob.get("/manage/live").json()["reservations"]


def test_admin_manages_nodes_through_the_agent(testbed):
    admin = client_for(testbed, ADMIN)
    added = admin.post("/admin/nodes", {"op": "add", "agent": "srv", "name": "srv-extra",
                                        "properties": "ip=10.20.9.9\nmodel=Bench Box"})
    assert added.status == 303, added.text[:500]
    page = admin.get("/admin/nodes").text
    assert 'data-node="srv-extra"' in page and "Bench Box" in page
    clash = admin.post("/admin/nodes", {"op": "add", "agent": "srv", "name": "srv-extra",
                                        "properties": "ip=10.20.9.9"})
    assert clash.status == 409
    bad = admin.post("/admin/nodes", {"op": "add", "agent": "srv", "name": "x", "properties": "no equals"})
    assert bad.status == 400 and "line 1" in bad.text
    assert admin.post("/admin/nodes", {"op": "rename", "name": "srv-extra",
                                       "new_name": "srv-renamed"}).status == 303
    page = admin.get("/admin/nodes?refresh=1").text
    assert 'data-node="srv-renamed"' in page and 'data-node="srv-extra"' not in page
    assert admin.post("/admin/nodes", {"op": "delete", "name": "srv-renamed"}).status == 303
    assert 'data-node="srv-renamed"' not in admin.get("/admin/nodes").text


def test_admin_manages_environments_and_agents(testbed, tmp_path):
    admin = client_for(testbed, ADMIN)
    put = admin.post("/admin/environments", {
        "op": "put", "agent": "sens", "name": "contiki-test", "description": "Contiki <b>test</b>",
        "image": "/srv/images/contiki.hex", "size_bytes": "123456", "default_user": "",
        "properties": "checksum=abc"})
    assert put.status == 303, put.text[:500]
    page = admin.get("/admin/environments").text
    assert 'data-environment="contiki-test"' in page
    assert "Contiki &lt;b&gt;test&lt;/b&gt;" in page
    assert admin.post("/admin/environments", {"op": "delete", "agent": "sens",
                                              "name": "contiki-test"}).status == 303
    assert 'data-environment="contiki-test"' not in admin.get("/admin/environments").text

    from tests.conftest import free_port

    added = admin.post("/admin/agents", {"name": "offline", "type": "sensor", "ip": "127.0.0.1",
                                         "port": str(free_port()), "token": "secret-token-1"})
    assert added.status == 303
    page = admin.get("/admin/agents").text
    row = re.search(r'<tr data-agent="offline">.*?</tr>', page, re.S).group(0)
    assert "Disconnected" in row and "secret-token-1" not in page
    assert re.search(r'class="error-text">[^<]+<', row), row  # the last error is shown
    reconnect = admin.post("/admin/agents/action", {"name": "offline", "op": "reconnect"})
    assert reconnect.status == 303
    assert "still does not answer" in admin.get("/admin/agents").text
    assert admin.post("/admin/agents/action", {"name": "offline", "op": "delete"}).status == 303
    assert 'data-agent="offline"' not in admin.get("/admin/agents").text

    # With a CA pasted in the form, the agent is called over TLS; a bad CA is refused.
    assert '<textarea name="ca_pem"' in page
    tls_form = {"name": "tls-agent", "type": "sensor", "ip": "127.0.0.1", "port": str(free_port()),
                "token": "secret-token-2"}
    refused = admin.post("/admin/agents", {**tls_form, "ca_pem": "not a certificate"})
    assert refused.status == 400 and "no PEM certificate" in refused.text
    from edgebed.tls import create_ca

    ca_pem = create_ca(tmp_path / "ca")[0].read_text()
    assert admin.post("/admin/agents", {**tls_form, "ca_pem": ca_pem}).status == 303
    page = admin.get("/admin/agents").text
    row = re.search(r'<tr data-agent="tls-agent">.*?</tr>', page, re.S).group(0)
    assert ">TLS</span>" in row and "Disconnected" in row
    assert admin.post("/admin/agents/action", {"name": "tls-agent", "op": "delete"}).status == 303
