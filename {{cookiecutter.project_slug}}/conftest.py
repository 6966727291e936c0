import pytest


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
