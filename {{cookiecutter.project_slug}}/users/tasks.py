"""
The site's email, as a background task (README.md, "Background tasks"): sent by the worker,
after the response, so that a slow or unreachable mail server never holds a page.
"""

from django.core.mail import EmailMultiAlternatives

from asgi_runtime.tasks import task


@task()
def send_email(subject, body, from_email, to, cc=(), bcc=(), reply_to=(), headers=None, html=""):
    """Send one email. A mail server that refuses it fails the task: the worker logs it and the
    admin lists it under Task results, with the error."""
    message = EmailMultiAlternatives(
        subject, body, from_email, to, cc=cc, bcc=bcc, reply_to=reply_to, headers=headers
    )
    if html:
        message.attach_alternative(html, "text/html")
    message.send()


def send_later(message):
    """Enqueue an EmailMessage (or EmailMultiAlternatives) for the worker to send. A task's
    arguments are JSON: plain text and an HTML part travel, attachments don't."""
    if message.attachments:
        raise ValueError("Attachments don't travel in a task's arguments: send this one yourself.")
    alternatives = getattr(message, "alternatives", [])
    html = [content for content, mimetype in alternatives if mimetype == "text/html"]
    return send_email.enqueue(
        subject=message.subject,
        body=message.body,
        from_email=message.from_email,
        to=list(message.to),
        cc=list(message.cc),
        bcc=list(message.bcc),
        reply_to=list(message.reply_to),
        headers=dict(message.extra_headers),
        html=html[0] if html else "",
    )
