"""Email settings: what settings.py makes of EMAIL_URL and the senders, in production."""

import pytest

from .production import run_in_production

EMAIL_VARIABLES = ("EMAIL_URL", "DJANGO_DEFAULT_FROM_EMAIL", "DJANGO_SERVER_EMAIL")
SHOW_MAILER = """
import django, json
django.setup()
from django.conf import settings
from django.core import mail
mailer = mail.mailers.default if django.VERSION >= (6, 1) else mail.get_connection()
fields = ("host", "port", "username", "password", "use_tls", "use_ssl", "timeout")
print(json.dumps({
    "backend": f"{type(mailer).__module__}.{type(mailer).__name__}",
    **{field: getattr(mailer, field, None) for field in fields},
    "from": settings.DEFAULT_FROM_EMAIL,
    "server": settings.SERVER_EMAIL,
}))
"""


def mailer_of(**variables):
    """The default mailer that settings.py configures from `variables`, in production."""
    return run_in_production(SHOW_MAILER, unset=EMAIL_VARIABLES, **variables)


SMTP = "django.core.mail.backends.smtp.EmailBackend"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp+tls://apikey:s3cr%40t@smtp.example.com:587",
            {"host": "smtp.example.com", "port": 587, "username": "apikey", "password": "s3cr@t"},
        ),
        ("smtp+tls://smtp.example.com", {"port": 587, "use_tls": True, "use_ssl": False}),
        ("smtp+ssl://smtp.example.com", {"port": 465, "use_tls": False, "use_ssl": True}),
        ("smtp://127.0.0.1:1025", {"host": "127.0.0.1", "port": 1025, "use_tls": False}),
    ],
    ids=["credentials", "starttls", "tls", "plain"],
)
def test_one_url_configures_the_mail_server(url, expected):
    mailer = mailer_of(EMAIL_URL=url)

    assert mailer["backend"] == SMTP
    assert {name: mailer[name] for name in expected} == expected
    assert mailer["timeout"] == 10


def test_the_senders_come_from_the_environment():
    mailer = mailer_of(
        EMAIL_URL="smtp://127.0.0.1:1025",
        DJANGO_DEFAULT_FROM_EMAIL="Example <hello@example.com>",
        DJANGO_SERVER_EMAIL="errors@example.com",
    )

    assert mailer["from"] == "Example <hello@example.com>"
    assert mailer["server"] == "errors@example.com"


def test_development_prints_email_on_the_console():
    mailer = mailer_of(DJANGO_DEBUG="true")

    # Django's console backend, printing text parts decoded (asgi_runtime/mail.py).
    assert mailer["backend"] == "asgi_runtime.mail.ConsoleEmailBackend"
