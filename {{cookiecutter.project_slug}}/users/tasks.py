"""
The site's email, as a background task (README.md, "Background tasks"): sent by the worker,
after the response, so that a slow or unreachable mail server never holds a page.

A task's arguments stay in the database, in the admin's Task results and in every backup, and
the site's email carries password-reset and verification links: a message travels encrypted,
with a key derived from SECRET_KEY, and only the worker reads it.
"""

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils.crypto import salted_hmac

from asgi_runtime.tasks import TaskResult, task


class UnreadableEmail(Exception):
    """What a send_email task fails with when no key of this site decrypts its message."""


def fernet() -> MultiFernet:
    """Encrypts with SECRET_KEY; decrypts with it or any of SECRET_KEY_FALLBACKS (rotation)."""
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    keys = [
        salted_hmac("users.tasks.send_email", "", secret, algorithm="sha256") for secret in secrets
    ]
    return MultiFernet([Fernet(base64.urlsafe_b64encode(key.digest())) for key in keys])


@task()
def send_email(sealed: str) -> None:
    """Send one email, as seal() encrypted it. A mail server that refuses it fails the task:
    the worker logs it and the admin lists it under Task results, with the error."""
    try:
        fields: dict[str, Any] = json.loads(fernet().decrypt(sealed))
    except InvalidToken:
        raise UnreadableEmail(
            "This email was encrypted with a SECRET_KEY that is neither SECRET_KEY nor one of "
            "SECRET_KEY_FALLBACKS (was the key changed without keeping the old one as a "
            "fallback?): it cannot be sent."
        ) from None
    html = fields.pop("html")
    message = EmailMultiAlternatives(**fields)
    if html:
        message.attach_alternative(html, "text/html")
    message.send()


# (The quotes: at run time, Django 5.2's backport takes one type argument, not two.)
def send_later(message: EmailMessage) -> "TaskResult[[str], None]":
    """Enqueue an EmailMessage (or EmailMultiAlternatives) for the worker to send. Async code
    enqueues it as `await send_email.aenqueue(seal(message))`."""
    return send_email.enqueue(seal(message))


def seal(message: EmailMessage) -> str:
    """The message, encrypted, as send_email takes it. Plain text and an HTML part travel,
    attachments don't."""
    if message.attachments:
        raise ValueError("Attachments don't travel in a task's arguments: send this one yourself.")
    alternatives = getattr(message, "alternatives", [])
    html = [content for content, mimetype in alternatives if mimetype == "text/html"]
    fields = {
        "subject": message.subject,
        "body": message.body,
        "from_email": message.from_email,
        "to": list(message.to),
        "cc": list(message.cc),
        "bcc": list(message.bcc),
        "reply_to": list(message.reply_to),
        "headers": dict(message.extra_headers),
        "html": html[0] if html else "",
    }
    return fernet().encrypt(json.dumps(fields).encode()).decode()
