"""Development's console email backend (mail.py): what it prints is what a mail client shows."""

from io import StringIO

from django.core.mail import EmailMessage, EmailMultiAlternatives

from asgi_runtime.mail import ConsoleEmailBackend

LINK = "http://127.0.0.1:8000/accounts/confirm-email/MQ:1vQ2xY:" + "a1B2c3D4e5=" * 6 + "/"


def printed(*messages):
    stream = StringIO()
    assert ConsoleEmailBackend(stream=stream).send_messages(list(messages)) == len(messages)
    return stream.getvalue()


def test_a_long_link_is_printed_whole_on_one_line():
    body = f"Hello,\n\nTo confirm your address, go to {LINK}\n\nThanks\n"
    output = printed(EmailMessage("Confirm", body, "site@example.com", ["bob@example.com"]))

    # On Django 6, Django's own backend prints this body quoted-printable: the link is cut by
    # "=" at each line's end, its "=" shown as "=3D".
    assert f"To confirm your address, go to {LINK}\n" in output
    assert "Content-Transfer-Encoding" not in output
    assert "To: bob@example.com\n" in output and "Subject: Confirm\n" in output
    assert output.endswith("\nThanks\n\n" + "-" * 79 + "\n")


def test_non_ascii_headers_and_text_are_decoded():
    body = "Grüße, Zoë: " + "é" * 100
    message = EmailMessage("Überprüfung ✓", body, "Zoë <site@example.com>", ["bob@example.com"])

    output = printed(message)

    assert "Subject: Überprüfung ✓\n" in output
    assert "From: Zoë <site@example.com>\n" in output
    assert f"\n{body}\n" in output


def test_each_alternative_is_shown_and_an_attachment_listed():
    message = EmailMultiAlternatives("Both", f"Go to {LINK}", to=["bob@example.com"])
    message.attach_alternative(f'<p><a href="{LINK}">Confirm</a></p>', "text/html")
    message.attach("report.pdf", b"%PDF-1.4 ...", "application/pdf")

    output = printed(message)

    assert f"[text/plain]\n\nGo to {LINK}\n" in output
    assert f'[text/html]\n\n<p><a href="{LINK}">Confirm</a></p>\n' in output
    assert "[attachment: report.pdf, application/pdf, 12 bytes]" in output


def test_messages_are_printed_one_after_the_other():
    first = EmailMessage("First", "one", to=["a@example.com"])
    second = EmailMessage("Second", "two", to=["b@example.com"])

    output = printed(first, second)

    assert output.count("-" * 79) == 2
    assert output.index("Subject: First") < output.index("one") < output.index("Subject: Second")
