"""Accounts through the pages: sign-up and approval, email confirmation over real SMTP, sessions,
CSRF, the login rate limit and the settings page."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from urllib.parse import unquote, urlsplit

import pytest
from aiosmtpd.controller import Controller as SmtpController

from edgebed.controller.settings import Settings
from edgebed.web.app import create_app
from tests.conftest import free_port
from tests.web.conftest import ADMIN, client_for
from tests.web.harness import PASSWORD, Client, Testbed


class Inbox:
    """An aiosmtpd handler that keeps what it receives."""

    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    server = SmtpController(inbox, hostname="127.0.0.1", port=free_port())
    server.start()
    try:
        yield server, inbox
    finally:
        server.stop()


def test_sign_up_mails_a_link_that_confirms_and_the_account_waits_for_approval(tmp_path, smtp_server):
    server, inbox = smtp_server
    bed = Testbed(tmp_path, smtp_host="127.0.0.1", smtp_port=server.port,
                  smtp_sender="testbed@example.org", public_url="https://testbed.example.org/").start()
    try:
        bed.create_user(ADMIN, admin=True)
        visitor = Client(bed.url)
        # The link is built from public_url, whatever Host the request claims.
        signed_up = visitor.request(
            "POST", "/signup",
            form={"email": "carol@example.org", "password": PASSWORD, "csrf_token": visitor.csrf_token()},
            headers={"Host": "evil.example"},
        )
        assert signed_up.status == 303 and signed_up.location == "/login"
        page = visitor.get("/login").text
        assert "administrator must authorize the account" in page
        assert "We sent a mail to carol@example.org" in page

        assert len(inbox.envelopes) == 1
        envelope = inbox.envelopes[0]
        assert envelope.rcpt_tos == ["carol@example.org"]
        assert envelope.mail_from == "testbed@example.org"
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert mail["Subject"] == "Confirm your edgebed account"
        assert "evil.example" not in mail.get_content()
        link = re.search(r"(https?://\S+/confirm\?token=\S+)", mail.get_content()).group(1)
        assert link.startswith("https://testbed.example.org/confirm?token=")

        # Not confirmed, not authorized: the log-in page says why it refuses.
        refused = visitor.post("/login", {"email": "carol@example.org", "password": PASSWORD})
        assert refused.status == 403
        assert "waiting for an administrator" in refused.text

        parts = urlsplit(link)
        confirmed = visitor.get(f"{parts.path}?{parts.query}")
        assert confirmed.status == 200 and "carol@example.org is confirmed" in confirmed.text
        assert bed.call(bed.controller.accounts.get_user("carol@example.org")).confirmed_email

        # A forged or truncated token is refused with a message, not a 500.
        forged = visitor.get(f"{parts.path}?{parts.query[:-4]}")
        assert forged.status == 400 and 'id="error-message"' in forged.text

        admin = client_for(bed, ADMIN)
        authorized = admin.post("/admin/users", {"email": "carol@example.org", "op": "authorize"})
        assert authorized.status == 303
        visitor.login("carol@example.org")
        assert visitor.get("/manage").status == 200
    finally:
        bed.stop()


def test_a_sign_up_with_a_taken_email_answers_as_for_a_new_one_and_mails_the_owner(tmp_path, smtp_server):
    server, inbox = smtp_server
    bed = Testbed(tmp_path, smtp_host="127.0.0.1", smtp_port=server.port,
                  smtp_sender="testbed@example.org", public_url="https://testbed.example.org").start()
    try:
        bed.create_user("owner@example.org")
        pages = {}
        for address in ("owner@example.org", "newcomer@example.org"):
            visitor = Client(bed.url)
            form = {"email": address, "password": "someone else's password", "csrf_token": visitor.csrf_token()}
            response = visitor.request("POST", "/signup", form=form, headers={"Host": "evil.example"})
            assert (response.status, response.location) == (303, "/login")
            pages[address] = visitor.get("/login").text.replace(visitor.csrf_token(), "CSRF")
        assert pages["owner@example.org"].replace("owner@", "newcomer@") == pages["newcomer@example.org"]
        assert "We sent a mail to owner@example.org" in pages["owner@example.org"]

        mails = {e.rcpt_tos[0]: email.message_from_bytes(e.content, policy=email.policy.default)
                 for e in inbox.envelopes}
        assert set(mails) == {"owner@example.org", "newcomer@example.org"}
        notice = mails["owner@example.org"]
        assert notice["Subject"] == "Sign-up with your edgebed address"
        text = notice.get_content()
        assert "already has an account. Nothing was changed." in text
        assert "https://testbed.example.org/login" in text and "evil.example" not in text
        assert "confirm?token=" not in text
        # The owner's password and account are as they were.
        assert bed.call(bed.controller.accounts.authenticate("owner@example.org", PASSWORD))
    finally:
        bed.stop()


def test_without_smtp_the_logged_link_is_built_from_public_url_not_the_host_header(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="edgebed.web.mail")
    bed = Testbed(tmp_path, public_url="https://beds.example.org/").start()
    try:
        visitor = Client(bed.url)
        form = {"email": "ivan@example.org", "password": PASSWORD, "csrf_token": visitor.csrf_token()}
        response = visitor.request("POST", "/signup", form=form,
                                   headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
        assert response.status == 303
        [logged] = [
            r.getMessage() for r in caplog.records if "confirmation link for ivan@example.org" in r.getMessage()
        ]
        assert logged.split(": ", 1)[1].startswith("https://beds.example.org/confirm?token=")
        assert "evil.example" not in caplog.text
    finally:
        bed.stop()


def test_without_smtp_the_confirmation_link_is_logged(accounts_testbed, caplog):
    caplog.set_level(logging.WARNING, logger="edgebed.web.mail")
    visitor = Client(accounts_testbed.url)
    assert visitor.post("/signup", {"email": "dave@example.org", "password": PASSWORD}).status == 303
    logged = [r.getMessage() for r in caplog.records if "confirmation link for dave@example.org" in r.getMessage()]
    assert logged, caplog.text
    path = "/confirm?" + logged[0].split("/confirm?", 1)[1]
    assert visitor.get(path).status == 200
    assert accounts_testbed.call(
        accounts_testbed.controller.accounts.get_user("dave@example.org")
    ).confirmed_email


def test_sign_up_refuses_bad_input_and_keeps_the_form(accounts_testbed):
    visitor = Client(accounts_testbed.url)
    short = visitor.post("/signup", {"email": "erin@example.org", "password": "short"})
    assert short.status == 400
    assert 'value="erin@example.org"' in short.text  # the form comes back filled
    # An email that has an account is answered as a new one would be (the mail tells its owner).
    fresh = Client(accounts_testbed.url)
    new = fresh.post("/signup", {"email": "erin@example.org", "password": PASSWORD})
    new_page = fresh.get("/login").text
    taken = Client(accounts_testbed.url)
    twice = taken.post("/signup", {"email": ADMIN, "password": PASSWORD})
    taken_page = taken.get("/login").text
    assert (twice.status, twice.location) == (new.status, new.location) == (303, "/login")
    assert taken_page.replace(ADMIN, "erin@example.org") == new_page.replace(
        fresh.csrf_token(), taken.csrf_token()
    )


def test_every_state_changing_form_needs_the_session_csrf_token(accounts_testbed):
    bed = accounts_testbed
    admin = client_for(bed, ADMIN)
    no_token = admin.post("/settings/ssh-key", {"ssh_key": ""}, csrf=False)
    assert no_token.status == 403 and "security token" in no_token.text
    wrong = admin.post("/settings/ssh-key", [("ssh_key", ""), ("csrf_token", "x" * 43)], csrf=False)
    assert wrong.status == 403
    # Another session's token does not work either.
    other = Client(bed.url)
    foreign = admin.post("/settings/ssh-key", [("ssh_key", ""), ("csrf_token", other.csrf_token())],
                         csrf=False)
    assert foreign.status == 403
    # Log-in and log-out are protected too (log-in CSRF would sign a victim into our account).
    assert Client(bed.url).post("/login", {"email": ADMIN, "password": PASSWORD}, csrf=False).status == 403
    assert admin.post("/logout", csrf=False).status == 403
    assert admin.get("/settings").status == 200
    # The header form, which scripts on the pages use, is accepted.
    token = admin.csrf_token()
    by_header = admin.request("POST", "/settings/ssh-key", form={"ssh_key": ""},
                              headers={"X-CSRF-Token": token})
    assert by_header.status == 303


def test_login_is_rate_limited_per_email_and_address(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("frank@example.org")
    client = Client(bed.url)
    for _ in range(5):
        assert client.post("/login", {"email": "frank@example.org", "password": "wrong-password"}).status == 401
    limited = client.post("/login", {"email": "frank@example.org", "password": PASSWORD})
    assert limited.status == 429
    assert "too many login attempts" in limited.text
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Other accounts from the same address are not locked out.
    client.login(ADMIN)


def test_failed_logins_are_limited_per_address_across_accounts(tmp_path):
    # A testbed of its own: the address's failures would otherwise lock out the shared one.
    bed = Testbed(tmp_path).start()
    try:
        bed.create_user(ADMIN, admin=True)
        client = Client(bed.url)
        # 20 failures spread over 10 accounts: no account reaches its own limit of 5.
        for i in range(20):
            response = client.post("/login", {"email": f"victim{i % 10}@example.org", "password": "guess-123456"})
            assert response.status == 401, (i, response.status)
        limited = client.post("/login", {"email": ADMIN, "password": PASSWORD})
        assert limited.status == 429 and "too many login attempts" in limited.text
    finally:
        bed.stop()


def test_login_sends_back_only_to_a_path_of_this_site(accounts_testbed):
    cases = {
        "/manage?x=1": "/manage?x=1",
        "https://evil.example/": "/reserve",
        "//evil.example/": "/reserve",
        "/\\evil.example/": "/reserve",
        # Browsers drop tabs and newlines from a Location: these would lead to //evil.example.
        "/\t/evil.example/": "/reserve",
        "/\n/evil.example/": "/reserve",
        "/\r\n/evil.example/": "/reserve",
        "/ /evil.example/": "/reserve",
    }
    for target, expected in cases.items():
        client = Client(accounts_testbed.url)
        response = client.post("/login", {"email": ADMIN, "password": PASSWORD, "next": target})
        assert response.status == 303, (target, response.status)
        assert response.location == expected, (target, response.location)


def test_session_cookie_is_encrypted_http_only_and_lax(accounts_testbed):
    client = Client(accounts_testbed.url)
    response = client.post("/login", {"email": ADMIN, "password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert ADMIN not in unquote(cookie) and "admin" not in cookie
    assert client.get("/settings").status == 200
    # Logging out empties the session: the browser's cookie no longer opens pages.
    assert client.post("/logout").status == 303
    assert client.get("/settings").status == 303


async def test_cookies_are_secure_behind_tls_and_the_app_opens_its_own_controller(tmp_path, aiohttp_client):
    settings = Settings(
        listen="127.0.0.1:0", database=str(tmp_path / "c.sqlite"),
        secret_key_file=str(tmp_path / "secret.key"), secure_cookies=True,
    )
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/login")
    assert response.status == 200
    assert "Secure" in response.headers["Set-Cookie"]
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_settings_change_password_ssh_key_and_api_tokens(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("grace@example.org")
    grace = client_for(bed, "grace@example.org")
    wrong_old = grace.post("/settings/password", {
        "old_password": "not my password", "new_password": "brand new secret",
        "new_password_again": "brand new secret"})
    assert wrong_old.status in (400, 401)
    differ = grace.post("/settings/password", {
        "old_password": PASSWORD, "new_password": "brand new secret",
        "new_password_again": "brand new secrex"})
    assert differ.status == 400 and "differ" in differ.text
    changed = grace.post("/settings/password", {
        "old_password": PASSWORD, "new_password": "brand new secret",
        "new_password_again": "brand new secret"})
    assert changed.status == 303
    Client(bed.url).login("grace@example.org", "brand new secret")

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2y7iBqk0hZ3cqJm3P8k7m0y6b2c9Z5wQ0y1d8tG5E grace@laptop"
    assert grace.post("/settings/ssh-key", {"ssh_key": key}).status == 303
    assert bed.call(bed.controller.accounts.get_user("grace@example.org")).ssh_key.strip() == key
    bad_key = grace.post("/settings/ssh-key", {"ssh_key": "<script>alert(1)</script>"})
    assert bad_key.status == 400 and "<script>alert(1)" not in bad_key.text

    created = grace.post("/settings/tokens", {"label": "laptop"})
    # Shown on the page after the redirect: a reload of that page creates no other token.
    assert created.status == 303 and created.location == "/settings"
    shown = grace.get("/settings")
    secret = re.search(r'id="new-token"[^>]*>([^<]+)<', shown.text).group(1)
    reloaded = grace.get("/settings").text
    assert secret not in reloaded and 'id="new-token"' not in reloaded
    assert len(bed.call(bed.controller.accounts.list_api_tokens("grace@example.org"))) == 1
    api = Client(bed.url, token=secret)
    assert api.get("/api/v1/reservations").status == 200
    # The secret is shown once: the settings page lists the token without it.
    listing = grace.get("/settings").text
    assert "laptop" in listing and secret not in listing
    token_id = re.search(r'name="token_id" value="(\d+)"', listing).group(1)
    assert grace.post("/settings/tokens/revoke", {"token_id": token_id}).status == 303
    assert api.get("/api/v1/reservations").status == 401


def test_a_revoked_account_loses_its_pages_at_once(accounts_testbed):
    bed = accounts_testbed
    bed.create_user("heidi@example.org")
    heidi = client_for(bed, "heidi@example.org")
    assert heidi.get("/settings").status == 200
    admin = client_for(bed, ADMIN)
    assert admin.post("/admin/users", {"email": "heidi@example.org", "op": "revoke"}).status == 303
    assert heidi.get("/settings").status == 303
    # The admin page lists pending accounts first.
    page = admin.get("/admin/users").text
    emails = re.findall(r'<tr data-email="([^"]+)"', page)
    pending = re.findall(r'<tr data-email="([^"]+)" class="pending"', page)
    assert "heidi@example.org" in pending
    assert emails[: len(pending)] == pending
    assert admin.post("/admin/users", {"email": "heidi@example.org", "op": "delete"}).status == 303
    assert 'data-email="heidi@example.org"' not in admin.get("/admin/users").text
