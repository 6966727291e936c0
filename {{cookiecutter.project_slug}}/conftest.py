import pytest

from asgi_runtime import testing
from asgi_runtime.tasks import ImmediateBackend

IMMEDIATE_BACKEND = f"{ImmediateBackend.__module__}.{ImmediateBackend.__name__}"


@pytest.fixture
def client():
    """Django's test client, through the project's ASGI application (asgi_runtime/testing.py)."""
    return testing.Client()


@pytest.fixture
def admin_client(admin_user):
    """pytest-django's admin_client, through the project's ASGI application."""
    client = testing.Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def async_client():
    """Django's async test client, through the project's ASGI application (asgi_runtime/testing.py)."""
    return testing.AsyncClient()


@pytest.fixture(autouse=True)
def close_async_test_connections():
    """The database connection an async test's ORM calls opened, closed when it ends
    (asgi_runtime/testing.py): PostgreSQL's test database can then be dropped."""
    yield
    testing.close_shared_thread_connections()


@pytest.fixture(autouse=True)
def test_settings(settings, tmp_path):
    """The same tests with production settings as with debug on (CI runs them so)."""
    # Django's test client speaks plain HTTP.
    settings.SECURE_SSL_REDIRECT = False
    # Pages that link static files render, and ServeStatic finds its directory, without a
    # collectstatic run first.
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # Passwords hashed in microseconds: production's hasher takes a good part of a second, by
    # design, for each sign-up and each login (failed ones too).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Background tasks run at once, inside the test that enqueues them (the site's email lands
    # in mailoutbox); tests/test_tasks.py runs the database backend and its worker.
    settings.TASKS = {"default": {"BACKEND": IMMEDIATE_BACKEND}}
    # Which production refuses (asgi.E013): the application, imported by a test's client,
    # must start here all the same.
    settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, "asgi.E013"]
    # An empty cache of each test's own: no rate limit counted by one test holds up another.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": str(tmp_path),
        }
    }
