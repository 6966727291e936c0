"""The system checks of checks.py: silent on this project, and each mistake caught."""

import os
import sys
from importlib import import_module

import django
import pytest
from django.conf import settings as django_settings
from django.core import checks
from django.core.management import call_command
from django.db.utils import ConnectionHandler

from asgi_runtime import checks as asgi_checks
from asgi_runtime import tasks as asgi_tasks

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
def project_task_backend(settings):
    """The project's own task backend: conftest.py runs the tests' tasks at once instead."""
    settings.TASKS = import_module(os.environ["DJANGO_SETTINGS_MODULE"]).TASKS


def ids(messages):
    return [message.id for message in messages]


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """No worker count from the environment or the command line running these tests."""
    for name in ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GRANIAN_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest"])


def use_mailer(settings, backend, host="", sender="Example <noreply@example.com>"):
    """The default mailer as settings.py configures it: MAILERS on Django 6.1, EMAIL_* before;
    and the sender, DEFAULT_FROM_EMAIL."""
    settings.DEFAULT_FROM_EMAIL = sender
    if django.VERSION >= (6, 1):
        options = {"host": host} if host else {}
        settings.MAILERS = {"default": {"BACKEND": backend, "OPTIONS": options}}
    else:
        settings.EMAIL_BACKEND, settings.EMAIL_HOST = backend, host


def test_this_project_passes_every_check(settings):
    settings.DEBUG = False
    use_mailer(settings, asgi_checks.SMTP_BACKEND, "smtp.example.com")
    assert checks.run_checks(tags=["asgi"], include_deployment_checks=True) == []


@pytest.mark.parametrize(
    ("argv", "environment"),
    [
        (["uvicorn", "app:app"], {"WEB_CONCURRENCY": "2"}),
        (["uvicorn", "app:app"], {"UVICORN_WORKERS": "4"}),
        (["uvicorn", "app:app", "--workers", "2"], {}),
        (["/venv/bin/python", "-m", "uvicorn", "app:app", "--workers=2"], {}),
        (["hypercorn", "app:app", "-w", "3"], {}),
        (["granian", "--interface", "asgi", "--workers", "2", "app:app"], {}),
        (["granian", "--interface", "asgi", "app:app"], {"GRANIAN_WORKERS": "2"}),
    ],
)
def test_several_processes_on_the_in_memory_layer(settings, monkeypatch, argv, environment):
    settings.CHANNEL_LAYERS = IN_MEMORY
    monkeypatch.setattr(sys, "argv", argv)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    errors = asgi_checks.check_in_memory_layer_has_one_process(None)

    assert ids(errors) == ["asgi.E001"]
    assert "server processes" in errors[0].msg


@pytest.mark.parametrize(
    "argv",
    [["daphne", "app:app"], ["hypercorn", "app:app", "--workers", "0"], ["uvicorn", "app:app"]],
)
def test_one_process_on_the_in_memory_layer_is_fine(settings, monkeypatch, argv):
    """daphne has no workers and hypercorn's --workers 0 serves from its own process, whatever
    WEB_CONCURRENCY says (platforms such as Heroku set it)."""
    settings.CHANNEL_LAYERS = IN_MEMORY
    monkeypatch.setattr(sys, "argv", argv)
    if argv[0] != "uvicorn":
        monkeypatch.setenv("WEB_CONCURRENCY", "4")

    assert asgi_checks.check_in_memory_layer_has_one_process(None) == []


def test_outside_a_server_the_procfile_says_how_many(settings, monkeypatch, tmp_path):
    settings.CHANNEL_LAYERS = IN_MEMORY
    (tmp_path / "Procfile").write_text("web: uvicorn app:app --workers ${WEB_CONCURRENCY:-1}\n")
    settings.BASE_DIR = tmp_path
    assert asgi_checks.check_in_memory_layer_has_one_process(None) == []

    monkeypatch.setenv("WEB_CONCURRENCY", "3")

    assert ids(asgi_checks.check_in_memory_layer_has_one_process(None)) == ["asgi.E001"]


@pytest.mark.parametrize(
    ("backend", "workers", "expected"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", "3", ["asgi.W014"]),
        ("django.core.cache.backends.locmem.LocMemCache", "1", []),
        ("django.core.cache.backends.db.DatabaseCache", "3", []),
    ],
)
def test_login_limits_counted_apart_by_each_process(
    settings, monkeypatch, backend, workers, expected
):
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": "django_cache"}}
    monkeypatch.setattr(sys, "argv", ["uvicorn", "app:app", "--workers", workers])

    errors = asgi_checks.check_several_processes_share_the_cache(None)

    assert ids(errors) == expected
    assert all(f"{workers} times the tries" in error.msg for error in errors)


def test_persistent_connections_without_the_pool(monkeypatch):
    # Not through the settings fixture: Django warns against overriding DATABASES there.
    database = {"ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 60, "OPTIONS": {}}
    monkeypatch.setattr(django_settings, "DATABASES", {"default": database})
    # Every request has a thread of its own: a connection kept per thread is never reused.
    assert ids(asgi_checks.check_persistent_connections_are_pooled(None)) == ["asgi.W002"]


@pytest.mark.parametrize("where", ["MIDDLEWARE", "STORAGES"])
def test_whitenoise(settings, where):
    if where == "MIDDLEWARE":
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, "whitenoise.middleware.WhiteNoiseMiddleware"]
    else:
        settings.STORAGES = {
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
        }

    assert ids(asgi_checks.check_static_files_stream_asynchronously(None)) == ["asgi.W003"]
{%- if cookiecutter.websockets %}


def test_any_host_in_production_lets_any_site_open_websockets(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["*"]

    assert ids(asgi_checks.check_websocket_origins_are_restricted(None)) == ["asgi.W004"]
    assert "asgi.W004" in ids(checks.run_checks(include_deployment_checks=True))
    assert "asgi.W004" not in ids(checks.run_checks())
{%- endif %}


def test_runserver_is_the_asgi_server():
    assert ids(asgi_checks.check_runserver_runs_the_asgi_server(None)) == []


def test_runserver_of_staticfiles_is_refused(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "asgi_runtime"]

    assert ids(asgi_checks.check_runserver_runs_the_asgi_server(None)) == ["asgi.E005"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("{{ cookiecutter.project_slug }}.asgi.nothing_here", "cannot be imported"),
        ("no_such_module.application", "cannot be imported"),
        ("{{ cookiecutter.project_slug }}.settings.DEBUG", "not callable"),
    ],
)
def test_an_application_path_that_servers_cannot_load(settings, path, problem):
    settings.ASGI_APPLICATION = path

    errors = asgi_checks.check_servers_load_the_asgi_application(None)

    assert "asgi.E006" in ids(errors)
    assert problem in errors[0].msg


def test_a_procfile_that_serves_another_object(settings, tmp_path):
    (tmp_path / "Procfile").write_text("web: uvicorn other.asgi:application\n")
    settings.BASE_DIR = tmp_path

    errors = asgi_checks.check_servers_load_the_asgi_application(None)

    assert ids(errors) == ["asgi.E006"]
    assert "other.asgi:application" in errors[0].msg


@pytest.mark.parametrize(
    "command",
    [
        "gunicorn project.asgi:application",
        "gunicorn project.wsgi:application -w 4",
        "uwsgi --module project.wsgi:application",
        "waitress-serve project.wsgi:application",
    ],
)
def test_a_procfile_that_starts_a_wsgi_server(settings, tmp_path, command):
    (tmp_path / "Procfile").write_text(f"web: {command}\n")
    settings.BASE_DIR = tmp_path

    assert ids(asgi_checks.check_procfile_runs_an_asgi_server(None)) == ["asgi.E007"]


def test_gunicorn_with_an_asgi_worker_is_fine(settings, tmp_path):
    command = "gunicorn project.asgi:application -k uvicorn_worker.UvicornWorker"
    (tmp_path / "Procfile").write_text(f"web: {command}\n")
    settings.BASE_DIR = tmp_path

    assert asgi_checks.check_procfile_runs_an_asgi_server(None) == []
{%- if cookiecutter.websockets %}


def test_channels_without_a_channel_layer(settings):
    settings.CHANNEL_LAYERS = {}

    assert ids(asgi_checks.check_channels_has_a_layer(None)) == ["asgi.W008"]
{%- endif %}


@pytest.mark.django_db
def test_a_reachable_database_passes(settings):
    assert asgi_checks.check_databases_accept_connections(None, databases=["default"]) == []


@pytest.mark.django_db
def test_an_unreachable_database_is_named_at_once(monkeypatch, tmp_path):
    missing = tmp_path / "no" / "such" / "directory" / "db.sqlite3"
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": missing}}
    monkeypatch.setattr(asgi_checks, "connections", ConnectionHandler(databases))

    errors = asgi_checks.check_databases_accept_connections(None, databases=["default"])

    assert ids(errors) == ["asgi.E009"]
    assert "unable to open database file" in errors[0].msg


def test_start_up_stops_on_an_error_with_one_line(settings, monkeypatch, capsys):
    settings.CHANNEL_LAYERS = IN_MEMORY
    monkeypatch.setattr(sys, "argv", ["uvicorn", "app:app", "--workers", "2"])

    with pytest.raises(SystemExit) as stopped:
        asgi_checks.run_checks_at_start_up()

    assert stopped.value.code == 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("asgi.E001: The in-memory channel layer")


def test_versions_the_runtime_was_not_verified_with_turn_the_fast_path_off(monkeypatch):
    import asgi_runtime
    from asgi_runtime import handler

    assert asgi_checks.check_runtime_was_verified_with_these_versions(None) == []
    assert type(handler.get_asgi_application()) is handler.FastASGIHandler

    monkeypatch.setitem(asgi_runtime.VERIFIED, "django", ((4, 0), (4, 1)))

    warnings = asgi_checks.check_runtime_was_verified_with_these_versions(None)
    assert ids(warnings) == ["asgi.W010"]
    assert "django >=4.0,<4.1" in warnings[0].msg
    assert type(handler.get_asgi_application()) is handler.DjangoASGIHandler


def test_production_does_not_start_without_collected_static_files(settings, tmp_path, capsys):
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
    }

    with pytest.raises(SystemExit):
        asgi_checks.run_checks_at_start_up()

    assert capsys.readouterr().err.startswith("asgi.E011: Static files were not collected")
    # Only at start-up: migrate and collectstatic run their checks before the files exist.
    assert "asgi.E011" not in ids(checks.run_checks())
    call_command("collectstatic", "--noinput", verbosity=0)
    assert asgi_checks.check_static_files_were_collected() == []


def test_production_without_a_mail_server_is_an_error(settings):
    settings.DEBUG = False
    use_mailer(settings, asgi_checks.SMTP_BACKEND)

    errors = asgi_checks.check_production_can_send_email(None)

    assert ids(errors) == ["asgi.E012"]
    assert "EMAIL_URL" in errors[0].hint


def test_production_mail_from_djangos_default_sender_is_an_error(settings):
    settings.DEBUG = False
    use_mailer(settings, asgi_checks.SMTP_BACKEND, "smtp.example.com", sender="webmaster@localhost")

    errors = asgi_checks.check_production_can_send_email(None)

    assert ids(errors) == ["asgi.E012"]
    assert "webmaster@localhost" in errors[0].msg
    assert "DJANGO_DEFAULT_FROM_EMAIL" in errors[0].hint


def test_production_with_a_development_mail_backend_is_an_error_once(settings):
    settings.DEBUG = False
    use_mailer(settings, "django.core.mail.backends.console.EmailBackend")

    found = ids(checks.run_checks(include_deployment_checks=True))

    # Django 6.1 reports it itself; before, this project's check does.
    expected, not_also = ("mail.E001", "asgi.E012")
    if django.VERSION < (6, 1):
        expected, not_also = not_also, expected
    assert expected in found and not_also not in found


def test_production_with_the_readable_console_backend_is_an_error(settings):
    settings.DEBUG = False
    use_mailer(settings, asgi_checks.CONSOLE_MAIL_BACKEND)

    assert "asgi.E012" in ids(checks.run_checks(include_deployment_checks=True))


def test_a_mail_server_or_development_needs_nothing_more(settings):
    settings.DEBUG = False
    use_mailer(settings, asgi_checks.SMTP_BACKEND, "smtp.example.com")
    assert asgi_checks.check_production_can_send_email(None) == []

    settings.DEBUG = True
    use_mailer(settings, "django.core.mail.backends.console.EmailBackend")
    assert asgi_checks.check_production_can_send_email(None) == []


def test_start_up_checks_leave_the_database_alone():
    # No database access is allowed in this test: since Django 6.1 a model with a JSONField
    # (allauth.mfa's Authenticator) queries SQLite in its check unless told there is no database.
    asgi_checks.run_checks_at_start_up()


@pytest.mark.parametrize("backend", ["ImmediateBackend", "DummyBackend"])
def test_production_runs_tasks_in_a_worker(settings, backend):
    """An immediate backend would run tasks inside requests, a dummy one would drop them."""
    kind = getattr(asgi_tasks, backend)
    settings.TASKS = {"default": {"BACKEND": f"{kind.__module__}.{kind.__name__}"}}
    assert "asgi.E013" in ids(checks.run_checks(tags=["asgi"]))
    settings.DEBUG = True
    assert "asgi.E013" not in ids(checks.run_checks(tags=["asgi"]))
    settings.DEBUG = False
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    assert "asgi.E013" not in ids(checks.run_checks(tags=["asgi"]))
