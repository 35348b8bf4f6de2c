"""Login sessions and credential versions in the service and the store: expiry, races between a
password check and a change, the schema upgrade, and a sign-up that answers alike for a taken
email (the web side is in tests/web/test_sessions.py)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from edgebed.controller.accounts import SESSION_SECONDS
from edgebed.controller.app import open_controller
from edgebed.controller.errors import AuthenticationFailed
from edgebed.controller.store import Store, migrate, open_database
from tests.controller.conftest import controller_for, make_settings

SECRET = bytes(range(32))


@pytest.fixture
async def ctl(tmp_path, clock):
    async with controller_for(make_settings(tmp_path), clock) as controller:
        controller.admin = await controller.accounts.create_user(
            "admin@example.org", "admin-password", admin=True, authorized=True
        )
        await controller.accounts.create_user("alice@example.org", "long-password", authorized=True)
        yield controller


async def test_a_login_session_lasts_seven_days_from_log_in(ctl, clock):
    grant = await ctl.accounts.log_in("alice@example.org", "long-password")
    assert grant.expires_at == int(clock()) + SESSION_SECONDS
    carried = ("alice@example.org", grant.session_id, grant.credential_version)
    clock.advance(SESSION_SECONDS - 1)
    assert (await ctl.accounts.session_user(*carried)).email == "alice@example.org"
    clock.advance(1)
    assert await ctl.accounts.session_user(*carried) is None
    # The next log-in clears expired rows from the table.
    await ctl.accounts.log_in("alice@example.org", "long-password")
    assert await ctl.store.users.end_session("x" * 64) is False


async def test_what_a_cookie_carries_must_match_exactly(ctl):
    grant = await ctl.accounts.log_in("alice@example.org", "long-password")
    accounts = ctl.accounts
    assert await accounts.session_user("alice@example.org", grant.session_id, grant.credential_version)
    for carried in [
        ("admin@example.org", grant.session_id, grant.credential_version),  # another account's email
        ("alice@example.org", grant.session_id + "x", grant.credential_version),
        ("alice@example.org", grant.session_id, grant.credential_version + "x"),
        ("alice@example.org", grant.session_id, ""),
        ("alice@example.org", None, grant.credential_version),
        ("alice@example.org", 12345, grant.credential_version),
        ("alice@example.org", grant.session_id, "x" * 10_000),
    ]:
        assert await accounts.session_user(*carried) is None, carried
    await accounts.end_session(None)  # an anonymous cookie logging out: nothing to end
    await accounts.end_session(grant.session_id)
    assert await accounts.session_user("alice@example.org", grant.session_id, grant.credential_version) is None


async def test_a_password_check_overtaken_by_a_change_opens_no_session(ctl):
    users = ctl.store.users
    before = await users.get_credentials("alice@example.org")
    await ctl.accounts.change_password("alice@example.org", "long-password", "changed-password")
    # The check that read `before` comes back after the change: nothing is opened or replaced.
    opened = await users.open_session(
        "alice@example.org", "a" * 64, expected_version=before.credential_version, now=0, expires_at=10**10
    )
    assert opened is False
    replaced = await users.replace_password(
        "alice@example.org", "hash", expected_version=before.credential_version,
        keep_api_tokens=True, new_session=None,
    )
    assert replaced is None
    with pytest.raises(AuthenticationFailed):
        await ctl.accounts.log_in("alice@example.org", "long-password")
    assert (await ctl.accounts.log_in("alice@example.org", "changed-password")).user.email == "alice@example.org"


async def test_each_account_gets_its_own_random_credential_version_and_a_new_one_when_rights_shrink(ctl):
    users = ctl.store.users
    alice = (await users.get_credentials("alice@example.org")).credential_version
    admin = (await users.get_credentials("admin@example.org")).credential_version
    assert alice and admin and alice != admin and len(alice) >= 32
    await ctl.accounts.update_flags(ctl.admin, "alice@example.org", admin=True)
    assert (await users.get_credentials("alice@example.org")).credential_version == alice
    await ctl.accounts.update_flags(ctl.admin, "alice@example.org", admin=False)
    demoted = (await users.get_credentials("alice@example.org")).credential_version
    assert demoted != alice
    # A rehash of the same password (new argon2 parameters) is no credential change.
    await users.update_user("alice@example.org", password="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
    assert (await users.get_credentials("alice@example.org")).credential_version == demoted


async def test_a_version_2_database_gets_credential_versions_and_the_session_table(database_url):
    db = open_database(database_url, max_connections=2)
    assert migrate(db, target=2) == 2
    with db.connection_context():
        for email in ("old1@example.org", "old2@example.org"):
            db.execute_sql(
                'INSERT INTO "user" ("email", "password", "ssh_key", "confirmed_email", "is_authorized", '
                f'"is_admin") VALUES ({db.param}, {db.param}, {db.param}, {db.param}, {db.param}, {db.param})',
                (email, "hash", "", False, True, False),
            )
    db.close_all()
    store = Store(database_url, secret_key=SECRET)
    await store.open()
    try:
        versions = {
            email: (await store.users.get_credentials(email)).credential_version
            for email in ("old1@example.org", "old2@example.org")
        }
        assert all(len(v) >= 32 for v in versions.values()) and len(set(versions.values())) == 2
        assert await store.users.open_session(
            "old1@example.org", "b" * 64, expected_version=versions["old1@example.org"], now=1, expires_at=2
        )
    finally:
        await store.close()


class CountingHasher(PasswordHasher):
    """Cheap argon2 parameters that count the hashes made."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.hashed = 0

    def hash(self, password, *, salt=None):  # type: ignore[override]
        self.hashed += 1
        return super().hash(password, salt=salt)


async def test_a_sign_up_with_a_taken_email_does_the_same_work_and_changes_nothing(tmp_path):
    hasher = CountingHasher()
    async with open_controller(make_settings(tmp_path), run_scheduler=False, password_hasher=hasher) as ctl:
        created = await ctl.accounts.sign_up("new@example.org", "first-password")
        assert created.created and hasher.hashed == 1
        again = await ctl.accounts.sign_up("NEW@example.org", "second-password", "")
        # The same argon2 hash as a real sign-up: the answer's time does not tell either.
        assert (again.email, again.created) == ("new@example.org", False) and hasher.hashed == 2
        await ctl.accounts.create_user("root@example.org", "root-password", admin=True, authorized=True)
        root = await ctl.accounts.get_user("root@example.org")
        await ctl.accounts.set_authorized(root, "new@example.org", True)
        assert await ctl.accounts.authenticate("new@example.org", "first-password")
        with pytest.raises(AuthenticationFailed):
            await ctl.accounts.authenticate("new@example.org", "second-password")
