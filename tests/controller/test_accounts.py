"""Accounts: sign-up and approval, argon2id hashes, email confirmation, API tokens, deletion."""

from __future__ import annotations

import sqlite3

import pytest

from edgebed.controller.errors import AuthenticationFailed, Conflict, InvalidInput, NotAuthorized, NotFound
from tests.controller.conftest import controller_for, make_settings

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"


@pytest.fixture
async def ctl(tmp_path, clock):
    async with controller_for(make_settings(tmp_path), clock) as controller:
        controller.admin = await controller.accounts.create_user(
            "admin@example.org", "admin-password", admin=True, authorized=True
        )
        yield controller


async def test_sign_up_waits_for_approval_and_stores_an_argon2id_hash(ctl, tmp_path):
    accounts = ctl.accounts
    with pytest.raises(InvalidInput, match="malformed"):
        await accounts.sign_up("alice at example", "long-password")
    with pytest.raises(InvalidInput, match="at least 8 characters"):
        await accounts.sign_up("alice@example.org", "short")
    with pytest.raises(InvalidInput, match="SSH key line 1: unknown key type"):
        await accounts.sign_up("alice@example.org", "long-password", "ssh-foo AAAA")
    signed_up = await accounts.sign_up("Alice@Example.org", "long-password", ED25519)
    assert (signed_up.email, signed_up.created) == ("alice@example.org", True)
    user = await accounts.get_user("alice@example.org")
    assert (user.email, user.is_authorized, user.is_admin, user.ssh_key) == ("alice@example.org", False, False, ED25519)
    # The same email again changes nothing, and says so only to the caller (the page answers
    # as for a new account and mails the owner).
    again = await accounts.sign_up("alice@example.org", "other-password")
    assert (again.email, again.created) == ("alice@example.org", False)
    with pytest.raises(InvalidInput, match="at least 8 characters"):
        await accounts.sign_up("alice@example.org", "short")
    with pytest.raises(NotAuthorized, match="waiting for an administrator's approval"):
        await accounts.authenticate("alice@example.org", "long-password")
    with pytest.raises(AuthenticationFailed):
        await accounts.authenticate("alice@example.org", "wrong-password")
    with pytest.raises(AuthenticationFailed):
        await accounts.authenticate("nobody@example.org", "long-password")
    assert [u.email for u in await accounts.list_users(ctl.admin)][0] == "alice@example.org"
    await accounts.set_authorized(ctl.admin, "alice@example.org", True)
    assert (await accounts.authenticate("ALICE@example.org", "long-password")).is_authorized
    with sqlite3.connect(tmp_path / "controller.sqlite") as conn:
        [(stored,)] = conn.execute("SELECT password FROM user WHERE email = 'alice@example.org'")
    assert stored.startswith("$argon2id$") and "long-password" not in stored

    with pytest.raises(AuthenticationFailed):
        await accounts.change_password("alice@example.org", "wrong-password", "new-password")
    await accounts.change_password("alice@example.org", "long-password", "new-password")
    assert await accounts.authenticate("alice@example.org", "new-password")


async def test_email_confirmation_tokens_are_signed_and_expire(ctl, clock):
    await ctl.accounts.sign_up("bob@example.org", "long-password")
    token = await ctl.accounts.confirmation_token("bob@example.org")
    with pytest.raises(InvalidInput, match="invalid or has expired"):
        await ctl.accounts.confirm_email(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert (await ctl.accounts.confirm_email(token)).confirmed_email
    late = await ctl.accounts.confirmation_token("bob@example.org")
    clock.advance(4 * 86400)
    with pytest.raises(InvalidInput, match="invalid or has expired"):
        await ctl.accounts.confirm_email(late)


async def test_api_tokens_are_shown_once_stored_hashed_and_revocable(ctl, tmp_path):
    accounts = ctl.accounts
    await accounts.create_user("carol@example.org", "long-password", authorized=True)
    secret = await accounts.create_api_token("carol@example.org", "laptop")
    assert (await accounts.user_for_api_token(secret)).email == "carol@example.org"
    [token] = await accounts.list_api_tokens("carol@example.org")
    assert token.label == "laptop" and token.last_used_at is not None
    with sqlite3.connect(tmp_path / "controller.sqlite") as conn:
        dump = "\n".join(conn.iterdump())
    assert secret not in dump
    with pytest.raises(AuthenticationFailed):
        await accounts.user_for_api_token(secret + "x")
    await accounts.set_authorized(ctl.admin, "carol@example.org", False)
    with pytest.raises(NotAuthorized):
        await accounts.user_for_api_token(secret)
    await accounts.revoke_api_token("carol@example.org", token.id)
    with pytest.raises(AuthenticationFailed):
        await accounts.user_for_api_token(secret)
    with pytest.raises(NotFound):
        await accounts.revoke_api_token("carol@example.org", token.id)


async def test_deleting_an_account_ends_its_reservations(ctl, clock, fake_agents):
    served = fake_agents("rpi", nodes=2)
    await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
    dave = await ctl.accounts.create_user("dave@example.org", "long-password", authorized=True)
    await ctl.reservations.reserve(dave, nodes=["rpi-000", "rpi-001"], start_date=int(clock()) + 3600, duration_hours=1)
    await ctl.accounts.create_api_token("dave@example.org")
    with pytest.raises(Conflict, match="your own account"):
        await ctl.accounts.delete_user(ctl.admin, "admin@example.org")
    await ctl.accounts.delete_user(ctl.admin, "dave@example.org")
    with pytest.raises(NotFound):
        await ctl.accounts.get_user("dave@example.org")
    assert await ctl.store.schedule.list_schedule() == []
    assert await ctl.store.users.list_api_tokens("dave@example.org") == []


async def test_flags_change_together_or_not_at_all(ctl):
    admin = await ctl.accounts.create_user("root@example.org", "admin-password", admin=True, authorized=True)
    await ctl.accounts.sign_up("new@example.org", "new-password")
    user = await ctl.accounts.update_flags(admin, "new@example.org", authorized=True, admin=True)
    assert (user.is_authorized, user.is_admin) == (True, True)
    with pytest.raises(Conflict, match="demote yourself"):
        await ctl.accounts.update_flags(admin, "root@example.org", authorized=True, admin=False)
    again = await ctl.accounts.get_user("root@example.org")
    assert (again.is_authorized, again.is_admin) == (True, True)
