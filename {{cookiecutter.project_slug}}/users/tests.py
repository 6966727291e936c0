"""The custom user model, its admin, and sign-up, login and logout for everyone."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from asgi_runtime.testing import Client

from .models import User

# Requests run in threads of their own, on database connections of their own, as in production
# (the client goes through asgi.py): they see committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


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


def test_signing_up_creates_an_account_and_signs_in(client):
    assert client.get("/accounts/signup/").status_code == 200

    response = client.post(
        "/accounts/signup/",
        {"username": "bob", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 302
    assert User.objects.filter(username="bob").exists()
    assert client.get("/").context["user"].get_username() == "bob"


def test_sign_up_applies_the_password_validators(client):
    response = client.post(
        "/accounts/signup/", {"username": "bob", "password1": "123", "password2": "123"}
    )

    assert response.status_code == 200
    assert "password2" in response.context["form"].errors
    assert not User.objects.filter(username="bob").exists()


def test_login_and_logout(client):
    User.objects.create_user("carol", password=PASSWORD)

    wrong = client.post("/accounts/login/", {"username": "carol", "password": "nope"})
    assert wrong.status_code == 200 and "sessionid" not in client.cookies

    right = client.post("/accounts/login/", {"username": "carol", "password": PASSWORD})
    assert right.status_code == 302 and "sessionid" in client.cookies
    assert b"Signed in as" in client.get("/").content

    assert client.post("/accounts/logout/").status_code == 302
    assert b"Signed in as" not in client.get("/").content


def test_login_needs_the_csrf_token():
    client = Client(enforce_csrf_checks=True)
    User.objects.create_user("dave", password=PASSWORD)

    response = client.post("/accounts/login/", {"username": "dave", "password": PASSWORD})

    assert response.status_code == 403
