import pytest


@pytest.fixture(autouse=True)
def static_files_without_collectstatic(settings, tmp_path):
    """Pages that link static files render, and ServeStatic finds its directory, without a
    collectstatic run first."""
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
