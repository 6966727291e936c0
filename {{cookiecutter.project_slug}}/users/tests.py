"""The custom user model, its admin (entered through the site's login), and the accounts every
visitor uses (django-allauth): sign-up with email verification, login by username or email,
password reset and change, the rate limits on each, and two-factor authentication."""

import base64
import hmac
import re
import struct
import time

import pytest
from allauth.account.models import EmailAddress
from allauth.core.internal import ratelimit
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from asgi_runtime.testing import Client

from .models import User

# Requests run in threads of their own, on database connections of their own, as in production
# (the client goes through asgi.py): they see committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another horse, another staple"


def link_in(message):
    """The one link of an email from the site, as a path."""
    url = re.search(r"https?://testserver(/\S+)", message.body)
    assert url, message.body
    return url.group(1)


def sign_up(client, username="bob", email="bob@example.com"):
    return client.post(
        "/accounts/signup/",
        {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD},
    )


def log_in(client, login, password=PASSWORD):
    return log_in_at(client, "/accounts/login/", login, password)


def log_in_at(client, url, login, password=PASSWORD):
    return client.post(url, {"login": login, "password": password})


def signed_in_as(client):
    user = client.get("/").context["user"]
    return user.get_username() if user.is_authenticated else None


def test_the_project_uses_its_own_user_model():
    assert get_user_model() is User

    user = User.objects.create_user("alice", "alice@example.com", PASSWORD)

    assert user.check_password(PASSWORD)
    assert not user.is_staff


def test_users_are_listed_in_the_admin(admin_client):
    User.objects.create_user("alice")

    response = admin_client.get("/admin/users/user/")

    assert response.status_code == 200
    assert b"alice" in response.content


def test_createsuperuser_makes_an_admin(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)

    call_command("createsuperuser", "--noinput", "--username=root", "--email=root@example.com")

    root = User.objects.get(username="root")
    assert root.is_superuser and root.is_staff and root.check_password(PASSWORD)


# DJANGO_ADMIN_FORCE_ALLAUTH (settings.py) is read once, when urls.py is imported.
admin_through_the_site_login = pytest.mark.skipif(
    not django_settings.DJANGO_ADMIN_FORCE_ALLAUTH, reason="DJANGO_ADMIN_FORCE_ALLAUTH is off"
)
ADMIN_LOGIN = "/accounts/login/?next=%2Fadmin%2F"


@admin_through_the_site_login
def test_the_admin_login_page_leads_to_the_site_login(client):
    assert client.get("/admin/").url == "/admin/login/?next=/admin/"
    assert client.get("/admin/login/?next=/admin/").url == ADMIN_LOGIN
    assert client.get("/admin/login/").url == "/accounts/login/?next=%2Fadmin%2Flogin%2F"


@admin_through_the_site_login
def test_an_admin_verifies_their_address_then_lands_in_the_admin(client, settings, mailoutbox):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    User.objects.create_superuser("root", "root@example.com", PASSWORD)

    # The first sign-in emails a link to the address createsuperuser was given.
    assert log_in_at(client, ADMIN_LOGIN, "root").url == "/accounts/confirm-email/"
    [message] = mailoutbox
    assert message.to == ["root@example.com"]
    assert client.post(link_in(message)).status_code == 302

    assert log_in_at(client, ADMIN_LOGIN, "root").url == "/admin/"
    assert b"Site administration" in client.get("/admin/").content


@admin_through_the_site_login
def test_a_signed_in_user_who_is_not_staff_gets_403_from_the_admin(client):
    client.force_login(User.objects.create_user("mallory", "mallory@example.com", PASSWORD))

    assert client.get("/admin/", follow=True).status_code == 403


@admin_through_the_site_login
def test_failed_admin_logins_count_as_the_sites(client, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    User.objects.create_superuser("root", "root@example.com", PASSWORD)

    for _ in range(5):
        assert log_in_at(client, ADMIN_LOGIN, "root", "wrong").status_code == 200

    assert log_in_at(client, ADMIN_LOGIN, "root").status_code == 429
    assert client.get("/admin/").url == "/admin/login/?next=/admin/"


def test_sign_up_verify_the_address_then_log_in(client, settings, mailoutbox):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"

    response = sign_up(client)

    assert response.status_code == 302
    assert User.objects.get(username="bob").email == "bob@example.com"
    assert signed_in_as(client) is None
    # Not before the address is verified.
    assert log_in(client, "bob").url == "/accounts/confirm-email/"
    assert signed_in_as(client) is None
    [*_, message] = mailoutbox
    assert message.to == ["bob@example.com"]

    confirm = link_in(message)
    assert b"Confirm" in client.get(confirm).content
    assert client.post(confirm).status_code == 302

    assert log_in(client, "bob").status_code == 302
    assert signed_in_as(client) == "bob"


def test_with_optional_verification_sign_up_signs_in(client, settings, mailoutbox):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"

    assert sign_up(client).status_code == 302

    assert signed_in_as(client) == "bob"
    assert mailoutbox[-1].to == ["bob@example.com"]


def test_sign_up_needs_an_email_address_and_valid_passwords(client):
    no_email = sign_up(client, email="")
    weak = client.post(
        "/accounts/signup/",
        {"username": "bob", "email": "bob@example.com", "password1": "123", "password2": "123"},
    )

    assert "email" in no_email.context["form"].errors
    assert "password1" in weak.context["form"].errors
    assert not User.objects.exists()


def test_an_address_signs_up_once_whatever_its_case(client, settings, mailoutbox):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    User.objects.create_user("alice", "alice@example.com", PASSWORD)

    response = sign_up(client, username="mallory", email="ALICE@Example.com")

    assert response.status_code == 200
    assert "email" in response.context["form"].errors
    assert not User.objects.filter(username="mallory").exists()


def test_with_mandatory_verification_sign_up_does_not_tell_which_addresses_exist(
    client, settings, mailoutbox
):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    User.objects.create_user("alice", "alice@example.com", PASSWORD)

    response = sign_up(client, username="mallory", email="ALICE@Example.com")

    # The same answer as for a new address; the address's owner is told by email instead.
    assert response.status_code == 302
    assert not User.objects.filter(username="mallory").exists()
    [message] = mailoutbox
    assert message.to == ["alice@example.com"] and "already" in message.body


@pytest.mark.parametrize("login", ["carol", "carol@example.com", "CAROL@example.com"])
def test_log_in_by_username_or_email_and_out(client, settings, login):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    User.objects.create_user("carol", "carol@example.com", PASSWORD)

    wrong = log_in(client, login, "nope")
    assert wrong.status_code == 200 and "sessionid" not in client.cookies

    assert log_in(client, login).status_code == 302
    assert b"Signed in as" in client.get("/").content

    assert client.post("/accounts/logout/").status_code == 302
    assert signed_in_as(client) is None


async def test_accounts_leads_to_the_login_or_the_account_page(async_client, django_user_model):
    # allauth's middleware, on the event loop: it reads the user with request.auser().
    assert (await async_client.get("/accounts/")).url == "/accounts/login/"

    await async_client.aforce_login(await django_user_model.objects.acreate(username="mia"))

    assert (await async_client.get("/accounts/")).url == "/accounts/email/"


def test_login_needs_the_csrf_token():
    client = Client(enforce_csrf_checks=True)
    User.objects.create_user("dave", "dave@example.com", PASSWORD)

    response = log_in(client, "dave")

    assert response.status_code == 403


def test_the_login_page_links_password_reset_and_change(client):
    page = client.get("/accounts/login/").content.decode()

    assert 'href="/accounts/password/reset/"' in page
    assert 'href="/accounts/password/change/"' in page
    assert 'href="/accounts/signup/"' in page


def test_a_forgotten_password_is_reset_by_email(client, settings, mailoutbox):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    User.objects.create_user("erin", "erin@example.com", PASSWORD)

    response = client.post("/accounts/password/reset/", {"email": "erin@example.com"})

    assert response.status_code == 302
    [message] = mailoutbox
    assert message.to == ["erin@example.com"]
    # The link stores its key in the session and moves on to a page without it.
    form_page = client.get(link_in(message), follow=True)
    assert form_page.status_code == 200 and "form" in form_page.context
    change = client.post(
        form_page.redirect_chain[-1][0], {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )
    assert change.status_code == 302

    assert log_in(client, "erin", PASSWORD).status_code == 200
    assert log_in(client, "erin", NEW_PASSWORD).status_code == 302
    assert signed_in_as(client) == "erin"


def test_an_unknown_address_gets_no_reset_link(client, mailoutbox):
    response = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})

    # The same answer as for a known address: the page tells nothing away.
    assert response.status_code == 302
    assert all("password/reset/key" not in message.body for message in mailoutbox)


def test_a_signed_in_user_changes_their_password(client):
    client.force_login(User.objects.create_user("frank", "frank@example.com", PASSWORD))

    wrong = client.post(
        "/accounts/password/change/",
        {"oldpassword": "nope", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    right = client.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert wrong.status_code == 200 and "oldpassword" in wrong.context["form"].errors
    assert right.status_code == 302
    assert User.objects.get(username="frank").check_password(NEW_PASSWORD)


@pytest.fixture
def clock(monkeypatch):
    """Moves the rate limits' clock forward: `clock(seconds)`."""
    offset = 0.0

    class Shifted:
        def __getattr__(self, name):
            return getattr(time, name)

        def time(self):
            return time.time() + offset

    monkeypatch.setattr(ratelimit, "time", Shifted())

    def forward(seconds):
        nonlocal offset
        offset += seconds

    return forward


def from_address(address):
    return Client(REMOTE_ADDR=address)


def test_failed_logins_on_one_account_are_refused_then_allowed_again(settings, clock):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    User.objects.create_user("grace", "grace@example.com", PASSWORD)
    client = from_address("192.0.2.1")

    for _ in range(5):
        assert log_in(client, "grace", "wrong").status_code == 200

    # Then even the right password is refused, with a page that says why, from any address.
    refused = log_in(client, "grace")
    assert refused.status_code == 429
    assert b"Too many attempts" in refused.content
    assert log_in(from_address("192.0.2.2"), "grace").status_code == 429
    assert signed_in_as(client) is None

    clock(5 * 60 + 1)

    assert log_in(client, "grace").status_code == 302
    assert signed_in_as(client) == "grace"


def test_failed_logins_from_one_address_are_refused_whatever_the_account(settings, clock):
    settings.ACCOUNT_EMAIL_VERIFICATION = "optional"
    User.objects.create_user("heidi", "heidi@example.com", PASSWORD)
    guesser = from_address("192.0.2.3")

    for number in range(10):
        assert log_in(guesser, f"user{number}", "wrong").status_code == 200

    assert log_in(guesser, "heidi").status_code == 429
    # Another address is not held up.
    assert log_in(from_address("192.0.2.4"), "heidi").status_code == 302

    clock(61)

    assert log_in(guesser, "heidi").status_code == 302


def test_sign_ups_and_password_reset_emails_are_limited(client, settings, mailoutbox):
    for number in range(20):
        assert sign_up(client, f"user{number}", f"user{number}@example.com").status_code == 302
        client.logout()
    assert sign_up(client, "user20", "user20@example.com").status_code == 429

    User.objects.create_user("ivan", "ivan@example.com", PASSWORD)
    mailoutbox.clear()
    for _ in range(5):
        client.post("/accounts/password/reset/", {"email": "ivan@example.com"})
    refused = client.post("/accounts/password/reset/", {"email": "ivan@example.com"})
    assert refused.status_code == 429
    assert len(mailoutbox) == 5


def test_a_verification_email_is_sent_once_in_three_minutes(client, settings, mailoutbox, clock):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    sign_up(client, "judy", "judy@example.com")
    assert len(mailoutbox) == 1

    # Logging in before verifying sends the link again, but not this soon.
    log_in(client, "judy")
    assert len(mailoutbox) == 1

    clock(3 * 60 + 1)
    log_in(client, "judy")
    assert len(mailoutbox) == 2


def totp(secret):
    """The authenticator app's code for `secret` now (RFC 6238: SHA-1, 30 s, 6 digits), in a
    period that has at least 3 s left: the server must see the same one."""
    if time.time() % 30 > 27:
        time.sleep(30 - time.time() % 30)
    counter = int(time.time() // 30)
    digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", counter), "sha1").digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**6:06d}"


def verified_user(username):
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def confirm_password(client):
    """What changing the account's security asks for first, even just after logging in."""
    response = client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    assert response.status_code == 302


def test_an_authenticator_app_and_recovery_codes_guard_the_login(client):
    verified_user("kim")
    assert log_in(client, "kim").status_code == 302

    # Enrol from the account page: the password again, the app's secret, one of its codes.
    assert b"/accounts/2fa/" in client.get("/accounts/email/").content
    assert client.get("/accounts/2fa/totp/activate/").url.startswith("/accounts/reauthenticate/")
    confirm_password(client)
    secret = client.get("/accounts/2fa/totp/activate/").context["form"].secret
    enrolled = client.post("/accounts/2fa/totp/activate/", {"code": totp(secret)})
    assert enrolled.status_code == 302
    codes = client.get(enrolled.url).context["unused_codes"]
    assert len(codes) == 10
    client.post("/accounts/logout/")

    # The password alone no longer signs in: a code is asked for.
    asked = log_in(client, "kim")
    assert asked.url == "/accounts/2fa/authenticate/"
    assert signed_in_as(client) is None
    wrong = client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert wrong.status_code == 200 and signed_in_as(client) is None
    code = totp(secret)
    assert client.post("/accounts/2fa/authenticate/", {"code": code}).status_code == 302
    assert signed_in_as(client) == "kim"
    client.post("/accounts/logout/")

    # Without the app, a recovery code, once.
    log_in(client, "kim")
    assert client.post("/accounts/2fa/authenticate/", {"code": codes[0]}).status_code == 302
    assert signed_in_as(client) == "kim"
    client.post("/accounts/logout/")
    log_in(client, "kim")
    assert client.post("/accounts/2fa/authenticate/", {"code": codes[0]}).status_code == 200
    assert signed_in_as(client) is None


def test_the_login_page_offers_passkeys_and_the_account_page_enrols_them(client):
    assert b'id="passkey_login"' in client.get("/accounts/login/").content

    verified_user("lee")
    log_in(client, "lee")
    confirm_password(client)

    page = client.get("/accounts/2fa/webauthn/add/")
    assert page.status_code == 200
    assert b"passkey" in page.content.lower()
