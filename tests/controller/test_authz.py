"""Authorization lives in controller/authz.py and every service uses it; Accounts ends a deleted
user's reservations through a collaborator it cannot be built without."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import edgebed.controller
from edgebed.controller.accounts import Accounts
from edgebed.controller.authz import Authz
from edgebed.controller.errors import AuthenticationFailed, Conflict, Forbidden, NotAuthorized
from tests.controller.conftest import FAST_HASHER, controller_for, make_settings

CHECKS = ("require_admin", "require_authorized")
SERVICES = (
    "accounts.py", "agents.py", "clock.py", "health.py", "inventory.py", "maintenance.py", "reservations.py",
)


@pytest.fixture
async def ctl(tmp_path, clock):
    async with controller_for(make_settings(tmp_path), clock) as controller:
        controller.admin = await controller.accounts.create_user(
            "admin@example.org", "admin-password", admin=True, authorized=True
        )
        controller.alice = await controller.accounts.create_user("alice@example.org", "alice-password", authorized=True)
        yield controller


def controller_sources() -> dict[str, ast.Module]:
    [root] = edgebed.controller.__path__
    return {path.name: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(Path(root).glob("*.py"))}


def test_the_rights_checks_are_defined_once_and_every_service_calls_them_through_authz():
    sources = controller_sources()
    defined = {
        (name, node.name)
        for name, tree in sources.items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in CHECKS
    }
    assert defined == {("authz.py", check) for check in CHECKS}

    callers: dict[str, set[str]] = {}
    for name, tree in sources.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CHECKS:
                assert ast.unparse(node.func.value) == "self._authz", f"{name}: {ast.unparse(node)}"
                callers.setdefault(name, set()).add(node.func.attr)
    assert set(callers) == set(SERVICES)

    # No service holds Accounts any more: only the composition (app.py) and the re-export do.
    importers = {
        name
        for name, tree in sources.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "edgebed.controller.accounts"
    }
    assert importers <= {"app.py", "service.py"}


async def test_rights_are_read_from_the_database_at_every_call(ctl, clock):
    authz = Authz(ctl.store.users)
    alice, admin = ctl.alice, ctl.admin
    assert (await authz.require_authorized(alice)).email == "alice@example.org"
    with pytest.raises(Forbidden):
        await authz.require_admin(alice)

    # Promoted: the stale object she holds is enough, the database says admin.
    await ctl.accounts.set_admin(admin, alice.email, True)
    assert (await authz.require_admin(alice)).is_admin
    # Revoked: refused at once, as admin and as user, by every service.
    await ctl.accounts.set_authorized(admin, alice.email, False)
    with pytest.raises(Forbidden):
        await authz.require_admin(alice)
    with pytest.raises(Forbidden):
        await ctl.agents.list_agents(alice)
    for call in (
        ctl.reservations.list_reservations(alice),
        ctl.inventory.timeline(int(clock()), int(clock()) + 3600, alice),
    ):
        with pytest.raises(NotAuthorized):
            await call
    # Deleted: the account no longer exists.
    await ctl.accounts.delete_user(admin, alice.email)
    with pytest.raises(AuthenticationFailed):
        await authz.require_authorized(alice)
    with pytest.raises(Forbidden):
        await authz.require_admin(alice)


async def test_an_admin_cannot_lock_themselves_out(ctl):
    admin = ctl.admin
    for call, message in (
        (ctl.accounts.set_authorized(admin, admin.email, False), "you cannot revoke your own account"),
        (ctl.accounts.set_admin(admin, admin.email, False), "you cannot demote yourself"),
        (ctl.accounts.delete_user(admin, admin.email), "you cannot delete your own account"),
    ):
        with pytest.raises(Conflict) as refused:
            await call
        assert refused.value.message == message
    # Confirming their own rights is no lock-out.
    assert (await ctl.accounts.update_flags(admin, admin.email, authorized=True, admin=True)).is_admin


def test_accounts_cannot_be_composed_without_ending_reservations():
    parameter = inspect.signature(Accounts).parameters["end_reservations"]
    assert parameter.default is inspect.Parameter.empty
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(TypeError, match="end_reservations"):
        Accounts(None, None, b"k" * 32, clock=lambda: 0.0)  # type: ignore[arg-type,call-arg]


async def test_a_deleted_account_has_its_reservations_ended_first_and_stays_when_that_fails(ctl, clock):
    ended: list[tuple[str, bool]] = []
    refuse = False

    async def end_reservations(email: str) -> None:
        # The account still exists while its reservations end.
        ended.append((email, await ctl.store.users.get_user(email) is not None))
        if refuse:
            raise Conflict(f"a reservation of {email} keeps changing; try again")

    accounts = Accounts(
        ctl.store, Authz(ctl.store.users), b"k" * 32,
        end_reservations=end_reservations, clock=clock, hasher=FAST_HASHER,
    )
    await accounts.create_user("bob@example.org", "bob-password", authorized=True)
    refuse = True
    with pytest.raises(Conflict, match="keeps changing"):
        await accounts.delete_user(ctl.admin, "bob@example.org")
    assert await ctl.store.users.get_user("bob@example.org") is not None

    refuse = False
    await accounts.delete_user(ctl.admin, "bob@example.org")
    assert ended == [("bob@example.org", True), ("bob@example.org", True)]
    assert await ctl.store.users.get_user("bob@example.org") is None
    # A refused deletion ends nothing.
    with pytest.raises(Forbidden):
        await accounts.delete_user(ctl.alice, "admin@example.org")
    assert len(ended) == 2
