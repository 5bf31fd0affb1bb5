"""The channels notifications go by: thin adapters over smtplib and urllib (no logic of their own)."""

from __future__ import annotations

import smtplib
import ssl
import urllib.request
from email.message import EmailMessage

from safety.notifications import SIGNATURE_HEADER, Notification, SMTPSettings, signature


class MailTransport:
    channel = "mail"

    def __init__(self, settings: SMTPSettings, sender: str, recipients: list[str], timeout: float = 20):
        self.settings, self.sender, self.recipients, self.timeout = settings, sender, recipients, timeout

    def send(self, n: Notification) -> None:
        mail = EmailMessage()
        mail["Subject"] = n.subject
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Message-ID"] = f"<{n.id}@safety-monitor>"
        mail["Idempotency-Key"] = n.id  # a receiver drops a repeat after a crash by this (or the Message-ID)
        mail.set_content(n.text())
        s = self.settings
        context = ssl.create_default_context()
        client = (smtplib.SMTP_SSL(s.host, s.port, timeout=self.timeout, context=context) if s.security == "tls"
                  else smtplib.SMTP(s.host, s.port, timeout=self.timeout))
        with client:
            if s.security == "starttls":
                client.starttls(context=context)
            if s.user:
                client.login(s.user, s.password or "")
            client.send_message(mail)


class WebhookTransport:
    channel = "webhook"

    def __init__(self, url: str, secret: str | None, timeout: float = 20):
        self.url, self.secret, self.timeout = url, secret, timeout

    def send(self, n: Notification) -> None:
        body = n.body()
        headers = {"Content-Type": "application/json", "Idempotency-Key": n.id}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # raises for 4xx and 5xx
            response.read()
