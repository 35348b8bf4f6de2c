"""Log-in rate limits counted in the database (controller/login_limits.py), so that replicas
behind a load balancer count the same attempts (three replicas on PostgreSQL:
test_multi_controller.py)."""

from __future__ import annotations

import asyncio

import pytest

from edgebed.controller.login_limits import LoginLimits, RateLimited
from edgebed.controller.store import Store


@pytest.fixture
async def store(tmp_path):
    store = Store(str(tmp_path / "controller.sqlite"), secret_key=b"k" * 32, workers=2)
    await store.open()
    yield store
    await store.close()


async def test_five_attempts_per_account_and_address_then_refused_until_the_window_passes(store):
    limits = LoginLimits(store, b"k" * 32, window_seconds=1.0)
    for _ in range(5):
        await limits.before_attempt("a@x.org", "10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        await limits.before_attempt("A@x.org", "10.0.0.1")  # the same account, whatever the case
    assert refused.value.retry_after == 1 and "too many login attempts" in refused.value.message
    # Another account or another address has its own budget.
    await limits.before_attempt("b@x.org", "10.0.0.1")
    await limits.before_attempt("a@x.org", "10.0.0.2")
    await asyncio.sleep(1.05)
    await limits.before_attempt("a@x.org", "10.0.0.1")
    # A success forgets the pair's attempts.
    for _ in range(4):
        await limits.before_attempt("c@x.org", "10.0.0.1")
    await limits.succeeded("c@x.org", "10.0.0.1")
    for _ in range(5):
        await limits.before_attempt("c@x.org", "10.0.0.1")


async def test_twenty_failures_from_one_address_refuse_every_account_from_it(store):
    limits = LoginLimits(store, b"k" * 32)
    for i in range(20):
        await limits.before_attempt(f"victim{i % 10}@x.org", "10.0.0.9")
        await limits.failed("10.0.0.9")
    with pytest.raises(RateLimited):
        await limits.before_attempt("admin@x.org", "10.0.0.9")
    await limits.before_attempt("admin@x.org", "10.0.0.8")


async def test_the_counts_keep_no_email_or_address_in_clear(store, tmp_path):
    limits = LoginLimits(store, b"k" * 32)
    await limits.before_attempt("secret-person@x.org", "192.0.2.77")
    await limits.failed("192.0.2.77")
    await store.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("controller.sqlite*"))
    assert b"secret-person" not in raw and b"192.0.2.77" not in raw
    await store.open()
