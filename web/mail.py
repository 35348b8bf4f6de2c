"""The sign-up confirmation mail: sent over SMTP when a host is configured, logged otherwise."""

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

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailNotSent(f"{self.smtp_host}:{self.smtp_port}: {exc}") from exc
