"""
Development's email on the console, as a mail client shows it.

Django's console backend prints each message as it would go over the wire. Since Django 6.0
(which builds messages with the standard library's modern email API), the text of a message
that has a line longer than 78 characters goes quoted-printable: printed so, a long link is cut
by "=" at the end of each line, and "=" in it shows as "=3D"; copied or clicked, the sign-up's
verification link is broken. Django 5.2 sends such text as it is (8bit) and prints it intact.

This backend prints the headers, then each text part decoded, whole lines as written: the same
on both. Other parts (attachments) are listed by name, type and size. settings.py uses it for
EMAIL_URL=consolemail:// (the development default). What goes to a mail server is unchanged.
"""

from __future__ import annotations

from email.header import decode_header, make_header
from email.message import Message

from django.core.mail.backends import console
from django.core.mail.message import EmailMessage

# How the body is encoded for the wire: not what is shown.
WIRE_HEADERS = {"content-transfer-encoding", "mime-version"}


class ConsoleEmailBackend(console.EmailBackend):
    """Django's console backend (one message after the other, under a lock), readable."""

    def write_message(self, message: EmailMessage) -> None:
        self.stream.write(readable(message.message()))
        self.stream.write("\n\n" + "-" * 79 + "\n")


def readable(message: Message) -> str:
    """`message`'s headers and parts, as text."""
    lines = [
        f"{name}: {header_text(value)}"
        for name, value in message.items()
        if name.lower() not in WIRE_HEADERS
    ]
    parts = [part for part in message.walk() if not part.is_multipart()]
    for part in parts:
        filename = part.get_filename()
        content = part.get_payload(decode=True)
        size = len(content) if isinstance(content, bytes) else 0
        if part.get_content_maintype() == "text" and not filename:
            if len(parts) > 1:
                lines += ["", f"[{part.get_content_type()}]"]
            charset = part.get_content_charset() or "utf-8"
            text = content.decode(charset, "replace") if isinstance(content, bytes) else ""
            lines += ["", text.rstrip("\n")]
        else:
            kind = part.get_content_type()
            lines += ["", f"[attachment: {filename or 'unnamed'}, {kind}, {size} bytes]"]
    return "\n".join(lines)


def header_text(value: object) -> str:
    """A header's value, RFC 2047's encoded words (non-ASCII names, subjects) decoded."""
    return str(make_header(decode_header(str(value))))
