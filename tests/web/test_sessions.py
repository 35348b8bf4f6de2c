"""Login sessions end on the server: a copy of a session cookie taken before a password change, a
logout, a revocation, a demotion or a deletion opens nothing after it. API tokens are revoked by a
password change unless the user keeps them. Real aiohttp server, real SQLite, real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3

from cryptography.fernet import Fernet

from edgebed.web.security import SESSION_COOKIE, session_key
from tests.web.conftest import ADMIN, client_for
from tests.web.harness import PASSWORD, Client, Testbed

NEW_PASSWORD = "a brand new passphrase"


def copy_of(client: Client) -> Client:
    """Another client with the same cookies: what someone who copied the cookie holds."""
    return Client(client.base_url, cookies=dict(client.cookies))


def signed_in(client: Client) -> bool:
    response = client.get("/settings")
    if response.status == 200:
        return True
    assert response.status == 303 and response.location.startswith("/login"), response.status
    return False


def change_password(client: Client, *, keep_api_tokens: bool = False):
    form = {"old_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD}
    if keep_api_tokens:
        form["keep_api_tokens"] = "on"
    return client.post("/settings/password", form)


def test_a_session_cookie_copied_before_a_password_change_is_refused_after_it(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("pat@example.org")
    laptop = client_for(bed, "pat@example.org")
    phone = client_for(bed, "pat@example.org")
    copied = copy_of(laptop)
    api = Client(bed.url, token=bed.api_token("pat@example.org"))
    assert signed_in(laptop) and signed_in(phone) and signed_in(copied)
    assert api.get("/api/v1/reservations").status == 200

    changed = change_password(laptop)
    assert changed.status == 303
    # The browser that changed the password keeps its session, under the new credentials...
    page = laptop.get("/settings")
    assert page.status == 200
    assert "Your other sessions were ended and 1 API token(s) revoked" in page.text
    # ...every other session ended, the copy of its own old cookie included, and the API token.
    assert not signed_in(copied)
    assert not signed_in(phone)
    assert api.get("/api/v1/reservations").status == 401
    # The laptop's forms still work: its CSRF token was kept.
    assert laptop.post("/settings/ssh-key", {"ssh_key": ""}).status == 303
    # The copy stays refused once the owner logs in again with the new password.
    Client(bed.url).login("pat@example.org", NEW_PASSWORD)
    assert not signed_in(copied)
    assert Client(bed.url).post("/login", {"email": "pat@example.org", "password": PASSWORD}).status == 401


def test_keep_my_api_tokens_keeps_them_through_a_password_change(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("quinn@example.org")
    browser = client_for(bed, "quinn@example.org")
    other = client_for(bed, "quinn@example.org")
    api = Client(bed.url, token=bed.api_token("quinn@example.org"))
    assert 'name="keep_api_tokens"' in browser.get("/settings").text
    assert change_password(browser, keep_api_tokens=True).status == 303
    assert "your API tokens were kept" in browser.get("/settings").text
    assert api.get("/api/v1/reservations").status == 200
    assert not signed_in(other)


def test_a_session_cookie_copied_before_logout_is_refused_after_it(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("rosa@example.org")
    rosa = client_for(bed, "rosa@example.org")
    copied = copy_of(rosa)
    csrf = rosa.csrf_token()
    assert signed_in(copied)
    assert rosa.post("/logout").status == 303
    assert not signed_in(rosa)
    assert not signed_in(copied)
    # The copy still holds a valid CSRF token, yet changes nothing: it is nobody's session.
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2y7iBqk0hZ3cqJm3P8k7m0y6b2c9Z5wQ0y1d8tG5E x@y"
    copied.csrf = csrf
    refused = copied.post("/settings/ssh-key", {"ssh_key": key})
    assert refused.status == 303 and refused.location.startswith("/login")
    assert bed.call(bed.controller.accounts.get_user("rosa@example.org")).ssh_key == ""
    # Logging out ended that session only: another one of the same account goes on.
    again = client_for(bed, "rosa@example.org")
    assert signed_in(again) and not signed_in(copied)


def test_a_session_cookie_copied_before_a_deletion_is_refused_after_it_even_by_a_new_account_of_that_email(
    accounts_testbed,
):
    bed = accounts_testbed
    bed.create_user("sam@example.org")
    sam = client_for(bed, "sam@example.org")
    copied = copy_of(sam)
    admin = client_for(bed, ADMIN)
    assert admin.post("/admin/users", {"email": "sam@example.org", "op": "delete"}).status == 303
    assert not signed_in(copied)
    # Someone creates an account with the same email: the old cookie does not open it.
    bed.create_user("sam@example.org")
    assert not signed_in(copied)
    assert not signed_in(sam)
    assert signed_in(client_for(bed, "sam@example.org"))


def test_a_revocation_and_a_demotion_end_the_account_s_sessions(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("tess@example.org")
    bed.create_user("uma@example.org", admin=True)
    tess = client_for(bed, "tess@example.org")
    uma = client_for(bed, "uma@example.org")
    admin = client_for(bed, ADMIN)
    assert admin.post("/admin/users", {"email": "tess@example.org", "op": "revoke"}).status == 303
    assert admin.post("/admin/users", {"email": "tess@example.org", "op": "authorize"}).status == 303
    # Authorized again, but the session the revocation ended does not come back.
    assert not signed_in(tess)
    assert uma.get("/admin/users").status == 200
    assert admin.post("/admin/users", {"email": "uma@example.org", "op": "demote"}).status == 303
    assert not signed_in(uma)
    # A promotion ends nothing.
    admin_copy = client_for(bed, "tess@example.org")
    assert admin.post("/admin/users", {"email": "tess@example.org", "op": "promote"}).status == 303
    assert signed_in(admin_copy)


def test_the_json_api_changes_the_password_and_revokes_the_tokens_unless_kept(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("vera@example.org")
    browser = client_for(bed, "vera@example.org")
    first = Client(bed.url, token=bed.api_token("vera@example.org"))
    second = Client(bed.url, token=bed.api_token("vera@example.org"))

    wrong = first.request("POST", "/api/v1/account/password",
                          json={"old_password": "not it at all", "new_password": NEW_PASSWORD})
    assert wrong.status == 400 and wrong.json() == {"error": "the current password is wrong"}
    unknown = first.request("POST", "/api/v1/account/password",
                            json={"old_password": PASSWORD, "new_password": NEW_PASSWORD, "keep": True})
    assert unknown.status == 400 and "unknown field" in unknown.json()["error"]
    not_bool = first.request("POST", "/api/v1/account/password",
                             json={"old_password": PASSWORD, "new_password": NEW_PASSWORD, "keep_api_tokens": "yes"})
    assert not_bool.status == 400 and "keep_api_tokens must be true or false" in not_bool.json()["error"]
    assert signed_in(browser)

    kept = first.request("POST", "/api/v1/account/password", json={
        "old_password": PASSWORD, "new_password": NEW_PASSWORD, "keep_api_tokens": True})
    assert kept.status == 200 and kept.json() == {"api_tokens_revoked": 0, "sessions_ended": True}
    assert not signed_in(browser)
    assert first.get("/api/v1/reservations").status == 200 and second.get("/api/v1/reservations").status == 200

    revoked = first.request("POST", "/api/v1/account/password", json={
        "old_password": NEW_PASSWORD, "new_password": PASSWORD})
    assert revoked.status == 200 and revoked.json() == {"api_tokens_revoked": 2, "sessions_ended": True}
    assert first.get("/api/v1/reservations").status == 401 and second.get("/api/v1/reservations").status == 401


def _cookie_session(bed: Testbed, client: Client) -> dict:
    """The session cookie's content, decrypted with the controller's key (as the server does)."""
    fernet = Fernet(base64.urlsafe_b64encode(session_key(bed.settings.secret_key())))
    return json.loads(fernet.decrypt(client.cookies[SESSION_COOKIE].strip('"').encode()))["session"]


def test_the_database_holds_each_session_by_its_hash_and_logging_out_removes_it(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("wim@example.org")
    wim = client_for(bed, "wim@example.org")
    carried = _cookie_session(bed, wim)
    assert carried["email"] == "wim@example.org" and len(carried["sid"]) >= 43 and carried["cv"]
    database = bed.settings.database

    def rows() -> list[tuple[str, int, int]]:
        with sqlite3.connect(database) as conn:
            return conn.execute(
                "SELECT id_hash, created_at, expires_at FROM login_session WHERE owner = ?", ("wim@example.org",)
            ).fetchall()

    [(id_hash, created_at, expires_at)] = rows()
    assert id_hash == hashlib.sha256(carried["sid"].encode()).hexdigest()
    assert expires_at - created_at == 7 * 24 * 3600
    with sqlite3.connect(database) as conn:
        dump = "\n".join(conn.iterdump())
    assert carried["sid"] not in dump
    assert wim.post("/logout").status == 303
    assert rows() == []
    # A cookie whose fields are not what the server wrote is no session, and no error either.
    forged = Client(bed.url)
    forged.cookies = {SESSION_COOKIE: "not-a-fernet-token"}
    assert not signed_in(forged)
    assert re.search(r'name="csrf_token"', forged.get("/login").text)
