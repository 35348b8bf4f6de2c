"""The pages in a real browser (Debian's Chromium driven by Playwright) against the real
controller and real simulated agents: sign up, approval, log in, reserve, configure, watch the
deploy on the manage page without reloading, destroy. A screenshot of each page is saved under
test-artifacts/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.processes import start_agents, stop_all
from tests.web.conftest import ADMIN
from tests.web.harness import PASSWORD, Testbed

# Slow: Chromium, and agent processes with deploys of several seconds.
pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
NEWCOMER = "newcomer@example.org"


@pytest.fixture(scope="module")
def browser_testbed(tmp_path_factory):
    """Slower simulated hardware than the other tests (a deploy takes seconds), so the manage
    page has intermediate states to show."""
    agents = start_agents(
        tmp_path_factory.mktemp("agents"),
        [("rpi", "raspberry", 4), ("srv", "node", 2), ("sens", "sensor", 2)],
        time_scale=0.02,
    )
    bed = Testbed(tmp_path_factory.mktemp("controller")).start()
    try:
        bed.create_user(ADMIN, admin=True)
        bed.register_agents(ADMIN, agents)
        yield bed
        assert not bed.server_errors, "\n\n".join(bed.server_errors)
    finally:
        bed.stop()
        stop_all(agents)


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]:has-text('Log in')")


def test_sign_up_approve_reserve_configure_deploy_and_destroy(browser, browser_testbed):
    base = browser_testbed.url
    # A visitor in Paris: the pages show and read times in the browser's zone.
    user_context = browser.new_context(timezone_id="Europe/Paris", viewport={"width": 1400, "height": 900})
    admin_context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = user_context.new_page()
    admin = admin_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        # Sign up; the page says an administrator must authorize the account.
        page.goto(f"{base}/signup")
        shoot(page, "01-signup")
        page.fill("input[name=email]", NEWCOMER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/login$"))
        assert "administrator must authorize" in page.inner_text("main")

        # Logging in before approval is refused, and the page says why.
        log_in(page, base, NEWCOMER)
        page.wait_for_selector(".flash-error")
        assert "waiting for an administrator" in page.inner_text(".flash-error")
        shoot(page, "02-login-awaiting-approval")

        # The administrator authorizes the account (pending sign-ups are listed first).
        log_in(admin, base, ADMIN)
        admin.goto(f"{base}/admin/users")
        first_row = admin.locator("table.users tbody tr").first
        assert first_row.get_attribute("data-email") == NEWCOMER
        shoot(admin, "03-admin-users-pending")
        first_row.locator("button[value=authorize]").click()
        admin.wait_for_selector(".flash-success")
        admin.goto(f"{base}/admin/agents")
        assert admin.locator("table.agents .badge.ok").count() == 3
        shoot(admin, "04-admin-agents")
        for name in ("nodes", "environments"):
            admin.goto(f"{base}/admin/{name}")
            shoot(admin, f"04-admin-{name}")

        # Now the newcomer logs in and reserves two raspberry nodes.
        log_in(page, base, NEWCOMER)
        page.wait_for_url(re.compile(r".*/reserve$"))
        page.goto(f"{base}/reserve?f.type=raspberry")
        assert "Europe/Paris" in page.inner_text("footer")
        rows = page.locator("table.nodes tbody tr")
        assert rows.count() == 4
        shoot(page, "05-reserve")
        page.check("input[name=nodes][value=rpi-001]")
        page.check("input[name=nodes][value=rpi-002]")
        page.fill("input[name=duration_hours]", "3")
        page.click("#reserve-form button[type=submit]")
        page.wait_for_url(re.compile(r".*/configure\?.*"))
        assert "Reserved rpi-001, rpi-002" in page.inner_text(".flash-success")

        # Configure both at once: environment and the system's password.
        form = page.locator("form.configure[data-type=raspberry]")
        assert form.locator("input[name=nodes]:checked").count() == 2
        form.locator("input[name=bin]").fill("experiment-1")
        environment = form.locator("select[name='prop.environment'] option").nth(1).get_attribute("value")
        form.locator("select[name='prop.environment']").select_option(environment)
        form.locator("input[name='prop.os_password']").fill("pi-password-42")
        shoot(page, "06-configure")
        form.locator("button[type=submit]").click()
        page.wait_for_url(re.compile(r".*/manage$"))

        # The manage page follows the deploy without reloading.
        page.evaluate("window.__not_reloaded = true")
        assert page.locator("section.bin[data-bin=experiment-1] tr[data-node]").count() == 2
        seen_states: set[str] = set()
        for _ in range(120):
            states = page.eval_on_selector_all(
                "tr[data-node]", "rows => rows.map(r => r.getAttribute('data-action-state') || '')"
            )
            seen_states.update(states)
            if states and all(state == "deployed" for state in states):
                break
            if "copy_image" in states:
                shoot(page, "07-manage-deploying")
            page.wait_for_timeout(250)
        assert page.evaluate("window.__not_reloaded === true"), "the manage page reloaded"
        assert all(
            state == "deployed"
            for state in page.eval_on_selector_all(
                "tr[data-node]", "rows => rows.map(r => r.getAttribute('data-action-state'))"
            )
        ), seen_states
        # Intermediate states were shown on the way, not only the end.
        assert seen_states - {"", "deployed"}, seen_states
        row = page.locator("tr[data-node=rpi-001]")
        assert row.locator(".progress .fill").evaluate("e => e.style.width") == "100%"
        assert "@" in row.locator("[data-field=access] code").first.inner_text()
        row.locator("[data-field=access] summary").click()
        assert row.locator("[data-field=access] .secret").inner_text() == "pi-password-42"
        shoot(page, "08-manage-deployed")

        # The reserve page's timeline shows the two windows as the user's own.
        page.goto(f"{base}/reserve?f.type=raspberry")
        assert page.locator(".timeline .busy.mine").count() == 2
        shoot(page, "08b-reserve-timeline")
        page.goto(f"{base}/manage")

        # Destroy both; the rows are released once the nodes are wiped.
        page.check("section.bin input[data-select-all]")
        page.click("button[value=destroy]")
        page.wait_for_url(re.compile(r".*/manage$"))
        page.evaluate("window.__not_reloaded = true")
        page.wait_for_function(
            "() => [...document.querySelectorAll('tr[data-node]')]"
            ".every(r => r.getAttribute('data-status') === 'released')",
            timeout=60_000,
        )
        assert page.evaluate("window.__not_reloaded === true")
        shoot(page, "09-manage-destroyed")
        page.goto(f"{base}/settings")
        shoot(page, "10-settings")
        # The refused log-in answered 403 on purpose; nothing else may fail (scripts, CSP, assets).
        expected = "Failed to load resource: the server responded with a status of 403"
        assert [e for e in errors if not e.startswith(expected)] == [], errors
        assert sum(e.startswith(expected) for e in errors) == 1, errors
    finally:
        user_context.close()
        admin_context.close()
