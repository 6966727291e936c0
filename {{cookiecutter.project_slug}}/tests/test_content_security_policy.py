"""The Content-Security-Policy header (SECURE_CSP in settings.py): on every kind of page, and
nothing on the project's pages that it would block.

A browser's view of the same pages, with the console watched for violations, is in the
template's own tests (Chromium); this is what can be read from the HTML.
"""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import django
import pytest
{%- if cookiecutter.websockets %}
from django.apps import apps
{%- endif %}
from django.conf import settings

from asgi_runtime.testing import Client

pytestmark = pytest.mark.django_db(transaction=True)

# Every kind of page: the site's, the accounts', the admin's, a redirect and errors.
PAGES = {
    "home": ("/", 200),
    "login": ("/accounts/login/", 200),
    "sign-up": ("/accounts/signup/", 200),
    "password reset": ("/accounts/password/reset/", 200),
    "admin login, which leads to the site's": ("/admin/login/", 302),
    "redirect": ("/accounts/", 302),
    "not found": ("/nowhere/", 404),
}
{%- if cookiecutter.websockets %}
# The demo room, until it is removed (README.md, "Removing the demo").
if apps.is_installed("rooms"):
    PAGES["room"] = ("/rooms/", 200)
{%- endif %}
SIGNED_IN_PAGES = {
    "email addresses": ("/accounts/email/", 200),
    "password change": ("/accounts/password/change/", 200),
    "two-factor authentication": ("/accounts/2fa/", 200),
    "admin": ("/admin/", 200),
    "admin list": ("/admin/users/user/", 200),
    "admin form": ("/admin/users/user/add/", 200),
}


class InlineCode(HTMLParser):
    """What a policy without 'unsafe-inline' allows or blocks in a page."""

    def __init__(self):
        super().__init__()
        self.nonces = []  # of each inline script and style element, in order
        self.blocked = []  # event handler and style attributes, javascript: URLs, other sites

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.blocked.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").startswith("javascript:"):
                self.blocked.append(f"<{tag} {name}={value}>")
        url = attributes.get("src") or (attributes.get("href") if tag == "link" else None)
        if url and re.match(r"(https?:)?//", url):
            self.blocked.append(f"<{tag}> from {url}")
        data = attributes.get("type") == "application/json"  # Not run, not checked.
        if tag == "style" or (tag == "script" and "src" not in attributes and not data):
            self.nonces.append(attributes.get("nonce"))


def assert_allowed(response, status):
    assert response.status_code == status
    policy = response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy
    directives = dict(directive.split(" ", 1) for directive in policy.split("; "))
    assert directives["default-src"] == "'self'"
    page = InlineCode()
    page.feed(response.content.decode())
    assert page.blocked == []
    nonce = re.search(r"'nonce-([^']+)'", directives["script-src"])
    assert page.nonces == [nonce[1]] * len(page.nonces) if nonce else page.nonces == []


@pytest.mark.parametrize(("path", "status"), PAGES.values(), ids=PAGES.keys())
def test_every_page_has_the_policy_and_nothing_it_blocks(client, path, status):
    assert_allowed(client.get(path), status)


@pytest.mark.parametrize(("path", "status"), SIGNED_IN_PAGES.values(), ids=SIGNED_IN_PAGES.keys())
def test_every_signed_in_page_has_the_policy_and_nothing_it_blocks(admin_client, path, status):
    assert_allowed(admin_client.get(path), status)


def test_a_refused_form_has_the_policy():
    response = Client(enforce_csrf_checks=True).post("/accounts/login/", {"login": "x"})

    assert response.status_code == 403
    assert "Content-Security-Policy" in response.headers


def test_each_page_gets_a_nonce_of_its_own(client):
    pages = [client.get("/").content.decode() for _ in range(3)]
    nonces = {re.findall(r'nonce="([^"]+)"', page)[0] for page in pages}

    assert len(nonces) == 3


def test_the_policy_is_the_one_in_settings(client):
    # A page that uses no nonce: the header has none.
    policy = client.get("/nowhere/").headers["Content-Security-Policy"]

    # Directives in the order of settings on Django 6, in django-csp's own on Django 5.2.
    # settings.CSP: the constants the policy is written with (a class, which mypy's Django plugin
    # cannot type as a setting: the ignore).
    assert sorted(policy.split("; ")) == sorted(
        f"{directive} {' '.join(value for value in values if value != settings.CSP.NONCE)}"  # type: ignore[has-type]
        for directive, values in settings.SECURE_CSP.items()
    )


def test_django_5_2_will_not_start_without_django_csp():
    # Django 6 sends the header itself; on Django 5.2, a project without django-csp installed
    # would send none: it stops, with one line.
    hide_django_csp = "import sys; sys.modules['csp'] = None; import django; django.setup()"
    result = subprocess.run(
        [sys.executable, "-c", hide_django_csp],
        env={**os.environ, "DJANGO_SECRET_KEY": "s" * 50, "DJANGO_ALLOWED_HOSTS": "example.com"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )

    if django.VERSION >= (6, 0):
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 3
        assert result.stderr.splitlines() == [
            "ImproperlyConfigured: Django 5.2 sends the Content-Security-Policy header with"
            " django-csp, which is not installed: add django-csp>=4.0 to the dependencies, or"
            " move to Django 6."
        ]
