"""Account pages: sign up, log in, log out, confirm the email address, settings."""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import get_session

from edgebed.controller.errors import AuthenticationFailed, InvalidInput
from edgebed.web.auth import current_user, require_user, safe_next
from edgebed.web.formpage import FormError, about, redraw_on_error
from edgebed.web.forms import MAX_LONG, MAX_PASSWORD, field, parse_int
from edgebed.web.keys import (
    CONTROLLER,
    ERROR_FIELD,
    FORM_TEMPLATE,
    MAILER,
    SETTINGS,
)
from edgebed.web.mail import MailNotSent
from edgebed.web.render import flash, render
from edgebed.web.security import SESSION_ID, reissue_session, start_session

log = logging.getLogger(__name__)


async def index(request: web.Request) -> web.StreamResponse:
    user = await current_user(request)
    raise web.HTTPSeeOther("/manage" if user else "/login")


async def signup_form(request: web.Request) -> web.StreamResponse:
    return await render(request, "signup.html", {"email": "", "ssh_key": ""})


async def signup(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email = field(form, "email")
    ssh_key = field(form, "ssh_key", required=False, max_length=MAX_LONG)
    request[FORM_TEMPLATE] = ("signup.html", {"email": email, "ssh_key": ssh_key})
    password = field(form, "password", max_length=MAX_PASSWORD, strip=False)
    accounts = request.app[CONTROLLER].accounts
    outcome = await accounts.sign_up(email, password, ssh_key)
    # Links come from the configured public URL only: the Host header is the client's to forge.
    base_url = request.app[SETTINGS].base_url
    mailer = request.app[MAILER]
    required = request.app[SETTINGS].require_confirmed_email
    try:
        if outcome.created:
            token = await accounts.confirmation_token(outcome.email)
            link = f"{base_url}/confirm?token={quote(token, safe='')}"
            await mailer.send_confirmation(outcome.email, link)
        else:
            # The page says the same as for a new account; only the address's owner learns.
            await mailer.send_account_exists(outcome.email, f"{base_url}/login")
        mailed, failed = mailer.sends_mail, False
    except MailNotSent as exc:
        # The account exists; losing it over a mail server hiccup would be worse.
        log.warning("sign-up mail to %s not sent: %s", outcome.email, exc)
        mailed, failed = False, True
    if mailed:
        note = f"We sent a mail to {outcome.email}: follow its link to confirm the address. "
    elif failed:
        note = "The confirmation mail could not be sent; an administrator can confirm the address. "
    elif required:
        # No mail server on this testbed: nothing failed, an administrator confirms.
        note = "An administrator will confirm your email address. "
    else:
        note = ""
    await flash(
        request,
        "Thank you for signing up. " + note
        + "An administrator must authorize the account before you can log in.",
        "success",
    )
    raise web.HTTPSeeOther("/login")


async def login_form(request: web.Request) -> web.StreamResponse:
    target = safe_next(request.query.get("next"))
    if await current_user(request):
        raise web.HTTPSeeOther(target)
    return await render(request, "login.html", {"email": "", "next": target})


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email = field(form, "email")
    sent_next = form.get("next")
    target = safe_next(sent_next if isinstance(sent_next, str) else None)
    request[FORM_TEMPLATE] = ("login.html", {"email": email, "next": target})
    password = field(form, "password", max_length=MAX_PASSWORD, strip=False)
    address = request.remote or ""
    # Per account and address, and failures per address whatever the account: one address
    # trying one password against many accounts is slowed down too. Counted in the database:
    # every controller behind a load balancer sees the same attempts.
    limits = request.app[CONTROLLER].login_limits
    await limits.before_attempt(email, address)
    try:
        grant = await request.app[CONTROLLER].accounts.log_in(email, password)
    except AuthenticationFailed:
        await limits.failed(address)
        raise
    await limits.succeeded(email, address)
    await start_session(request, grant)
    raise web.HTTPSeeOther(target)


async def logout(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    # Ended on the server: a copy of this cookie taken earlier opens nothing either.
    await request.app[CONTROLLER].accounts.end_session(session.get(SESSION_ID))
    session.invalidate()
    raise web.HTTPSeeOther("/login")


async def confirm_email(request: web.Request) -> web.StreamResponse:
    token = field(request.query, "token", max_length=1024)
    user = await request.app[CONTROLLER].accounts.confirm_email(token)
    return await render(request, "confirmed.html", {"confirmed": user.email})


# The session key holding a new API token between its POST and the page that shows it once.
NEW_TOKEN = "new_token"


async def _settings_page(
    request: web.Request,
    user,
    *,
    values: dict[str, str] | None = None,
    form_error: FormError | None = None,
    status: int = 200,
) -> web.Response:
    tokens = await request.app[CONTROLLER].accounts.list_api_tokens(user.email)
    session = await get_session(request)
    # Popped: the secret is shown on one page, a reload no longer has it (nor makes another).
    new_token = session.pop(NEW_TOKEN, None) if form_error is None else None
    return await render(
        request,
        "settings.html",
        {"tokens": tokens, "new_token": new_token, "values": values or {}, "form_error": form_error},
        status=status,
    )


def _redraw_settings(request: web.Request, user, form: str, values: dict[str, str]) -> None:
    async def draw(form_error: FormError, status: int) -> web.StreamResponse:
        return await _settings_page(request, user, values=values, form_error=form_error, status=status)

    redraw_on_error(request, draw, form)


async def settings_page(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    return await _settings_page(request, user)


async def change_password(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    form = await request.post()
    _redraw_settings(request, user, "password", {})
    with about(request, "password.old_password"):
        old = field(form, "old_password", max_length=MAX_PASSWORD, strip=False, label="current password")
    with about(request, "password.new_password"):
        new = field(form, "new_password", max_length=MAX_PASSWORD, strip=False, label="new password")
    with about(request, "password.new_password_again"):
        again = field(
            form, "new_password_again", max_length=MAX_PASSWORD, strip=False, label="new password (again)"
        )
        if new != again:
            raise InvalidInput("the two new passwords differ")
    keep_tokens = form.get("keep_api_tokens") == "on"
    try:
        change = await request.app[CONTROLLER].accounts.change_password(
            user.email, old, new, keep_api_tokens=keep_tokens, open_session=True
        )
    except AuthenticationFailed as error:
        # A wrong current password is the form's mistake, not a lost session: 400, not 401.
        request[ERROR_FIELD] = "password.old_password"
        raise InvalidInput(error.message) from None
    except InvalidInput:
        request[ERROR_FIELD] = "password.new_password"
        raise
    if change.session is not None:
        await reissue_session(request, change.session)
    tokens = (
        "your API tokens were kept" if keep_tokens
        else f"{change.api_tokens_revoked} API token(s) revoked"
    )
    await flash(
        request,
        f"Your password was changed. Your other sessions were ended and {tokens}.",
        "success",
    )
    raise web.HTTPSeeOther("/settings")


async def set_ssh_key(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    form = await request.post()
    posted = form.get("ssh_key")
    _redraw_settings(request, user, "ssh", {"ssh_key": posted if isinstance(posted, str) else ""})
    with about(request, "ssh.ssh_key"):
        ssh_key = field(form, "ssh_key", required=False, max_length=MAX_LONG, label="SSH key")
        await request.app[CONTROLLER].accounts.set_ssh_key(user.email, ssh_key)
    await flash(request, "Your SSH key was saved." if ssh_key else "Your SSH key was removed.", "success")
    raise web.HTTPSeeOther("/settings")


async def create_token(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    form = await request.post()
    posted = form.get("label")
    _redraw_settings(request, user, "token", {"label": posted if isinstance(posted, str) else ""})
    with about(request, "token.label"):
        label = field(form, "label", required=False, max_length=100)
    secret = await request.app[CONTROLLER].accounts.create_api_token(user.email, label)
    # Kept in the (encrypted) session cookie until the page after the redirect shows it once: a
    # reload of that page neither shows it again nor creates another token. Stored hashed.
    session = await get_session(request)
    session[NEW_TOKEN] = secret
    raise web.HTTPSeeOther("/settings")


async def revoke_token(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    form = await request.post()
    _redraw_settings(request, user, "revoke", {})
    token_id = parse_int(field(form, "token_id", max_length=20), "token id", minimum=1, maximum=2**62)
    await request.app[CONTROLLER].accounts.revoke_api_token(user.email, token_id)
    await flash(request, "The API token was revoked.", "success")
    raise web.HTTPSeeOther("/settings")
