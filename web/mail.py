"""The sign-up mails: sent over SMTP when a host is configured, logged otherwise.

A sign-up sends one mail whether or not the address has an account: the confirmation link for a
new account, a notice for an existing one. Links are built by the caller from the configured
public URL (Settings.base_url), never from a request's Host header.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from email.message import EmailMessage

log = logging.getLogger(__name__)

SMTP_TIMEOUT_SECONDS = 10


class MailNotSent(Exception):
    """The SMTP server refused the mail or could not be reached."""


class ConfirmationMailer:
    def __init__(self, smtp_host: str, smtp_port: int, sender: str) -> None:
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.sender = sender

    @property
    def sends_mail(self) -> bool:
        return bool(self.smtp_host)

    async def send_confirmation(self, recipient: str, link: str) -> None:
        if not self.sends_mail:
            # No mail server on this testbed: the operator hands the link over.
            log.warning("no SMTP host configured; confirmation link for %s: %s", recipient, link)
            return
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = recipient
        message["Subject"] = "Confirm your edgebed account"
        message.set_content(
            "Someone (hopefully you) signed up on edgebed with this address.\n\n"
            f"Follow this link to confirm it:\n\n    {link}\n\n"
            "An administrator still has to authorize the account before you can log in.\n"
        )
        # smtplib blocks; a thread keeps the pages responsive while a slow server answers.
        await asyncio.to_thread(self._send, message)

    async def send_account_exists(self, recipient: str, login_link: str) -> None:
        """Tells the owner of an existing account that someone signed up with their address
        (the sign-up page answered as for a new account, so only they learn it)."""
        if not self.sends_mail:
            log.warning(
                "no SMTP host configured; sign-up with the address of the existing account %s "
                "(nothing changed; notice not mailed)", recipient,
            )
            return
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = recipient
        message["Subject"] = "Sign-up with your edgebed address"
        message.set_content(
            "Someone (perhaps you) tried to sign up on edgebed with this address, which already "
            "has an account. Nothing was changed.\n\n"
            f"If it was you, log in with your password:\n\n    {login_link}\n\n"
            "If it was not, you can ignore this mail.\n"
        )
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailNotSent(f"{self.smtp_host}:{self.smtp_port}: {exc}") from exc
