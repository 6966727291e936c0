"""
System checks for the classic ASGI mistakes, in Django's check framework (tag "asgi").

`manage.py check` and `check --deploy` run them, `migrate` runs the database one, and asgi.py
runs them when a server starts, as `runserver` does: an error stops start-up with its message
on one line, a warning is logged. Each message says what goes wrong and how to fix it.

https://docs.djangoproject.com/en/stable/topics/checks/
"""

import importlib
import logging
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path

from django.apps import apps
from django.conf import global_settings, settings
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core import checks
from django.core.files.storage import storages
from django.core.management import get_commands
from django.db import connections
from django.utils.module_loading import import_string

from . import VERIFIED, VERSION, unverified_versions

logger = logging.getLogger(__name__)

LOCAL_MEMORY_CACHE = "django.core.cache.backends.locmem.LocMemCache"
IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"
# Commands that serve WSGI: none of them speaks ASGI, so none serves WebSockets.
WSGI_SERVERS = {"gunicorn", "uwsgi", "waitress-serve", "mod_wsgi-express"}
# gunicorn serves ASGI only through a worker class such as uvicorn-worker's.
ASGI_WORKER_CLASSES = ("uvicorn_worker.", "uvicorn.workers.")

# The environment variables each server reads its worker count from, when --workers is not
# given. daphne has no workers.
WORKER_VARIABLES = {
    "uvicorn": ("UVICORN_WORKERS", "WEB_CONCURRENCY"),
    "gunicorn": ("WEB_CONCURRENCY",),
    "hypercorn": (),
    "granian": ("GRANIAN_WORKERS",),
    "daphne": (),
}
# ${NAME} and ${NAME:-default} in a Procfile line.
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")

# Set while checks run from asgi.py, or while a check imports asgi.py: one run at a time.
_running = False


def procfile_command(name="Procfile", process="web"):
    """The `web:` (or another process's) line of a Procfile as a shell would run it here:
    ${NAME:-default} expanded from this environment, then split into words. [] if there is
    none."""
    try:
        lines = (settings.BASE_DIR / name).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        if line.startswith(f"{process}:"):
            expanded = VARIABLE.sub(
                lambda match: os.environ.get(match["name"]) or match["default"] or "",
                line.removeprefix(f"{process}:"),
            )
            return shlex.split(expanded)
    return []


def option(command, *names):
    """The value of the first of `names` given on the command line (`--x 2` or `--x=2`)."""
    for position, word in enumerate(command):
        for name in names:
            if word == name and position + 1 < len(command):
                return command[position + 1]
            if word.startswith(f"{name}="):
                return word.removeprefix(f"{name}=")
    return None


def server_name(command):
    """uvicorn, hypercorn, ...: the program a command line runs (`python -m x` included)."""
    if not command:
        return ""
    if command[0].endswith("python") or Path(command[0]).name.startswith("python"):
        return command[2] if command[1:2] == ["-m"] and len(command) > 2 else ""
    program = Path(command[0])
    return program.parent.name if program.name == "__main__.py" else program.name


def server_processes():
    """How many processes the server shares the work between: read from its own command line
    when a server is starting, else from the Procfile's with this environment."""
    command = sys.argv if server_name(sys.argv) in WORKER_VARIABLES else procfile_command()
    server = server_name(command)
    if server == "daphne":
        return 1
    workers = option(command, "--workers", *(["-w"] if server != "uvicorn" else []))
    for name in WORKER_VARIABLES.get(server, ()):
        workers = workers or os.environ.get(name)
    if workers is None and server == "hypercorn":
        try:
            hypercorn = tomllib.loads((settings.BASE_DIR / "hypercorn.toml").read_text())
            workers = hypercorn.get("workers")
        except (OSError, tomllib.TOMLDecodeError):
            pass
    # hypercorn's --workers 0 serves from the process itself.
    return max(1, int(workers)) if str(workers).isdigit() else 1


@checks.register("asgi")
def check_runtime_was_verified_with_these_versions(app_configs, **kwargs):
    unverified = unverified_versions()
    if not unverified:
        return []
    found = ", ".join(f"{name} {version}" for name, version in unverified.items())
    verified = ", ".join(
        f"{name} >={'.'.join(map(str, low))},<{'.'.join(map(str, below))}"
        for name, (low, below) in VERIFIED.items()
    )
    return [
        checks.Warning(
            f"asgi_runtime {VERSION} was verified with {verified}; installed: {found}. Its fast "
            "request path relies on internals of these packages (asgi_runtime.INTERNALS), so it "
            "is off: Django's own handler and middleware serve requests, slower but correct.",
            hint="Take the template update that verifies these versions (cruft update), or "
            "install versions within the verified ranges.",
            id="asgi.W010",
        )
    ]


@checks.register("asgi")
def check_in_memory_layer_has_one_process(app_configs, **kwargs):
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    processes = server_processes()
    if layer.get("BACKEND") != IN_MEMORY_LAYER or processes < 2:
        return []
    return [
        checks.Error(
            f"The in-memory channel layer reaches one process only, and {processes} server "
            "processes are configured: every room would be split between them, silently.",
            hint="Run one server process (WEB_CONCURRENCY=1, or no --workers), or use "
            "channels_redis' RedisPubSubChannelLayer on a Redis that every process shares.",
            id="asgi.E001",
        )
    ]


@checks.register("asgi")
def check_several_processes_share_the_cache(app_configs, **kwargs):
    backend = settings.CACHES.get("default", {}).get("BACKEND")
    processes = server_processes()
    if backend != LOCAL_MEMORY_CACHE or processes < 2:
        return []
    return [
        checks.Warning(
            f"{processes} server processes each keep the cache in their own memory: the "
            "login limits (ACCOUNT_RATE_LIMITS) count in each process apart, so a password "
            f"guesser gets {processes} times the tries.",
            hint="Set CACHE_URL to a cache every process shares (dbcache://django_cache after "
            "manage.py createcachetable, filecache:///var/tmp/<name> on one machine), or run "
            "one server process.",
            id="asgi.W014",
        )
    ]


@checks.register("asgi")
def check_persistent_connections_are_pooled(app_configs, **kwargs):
    return [
        checks.Warning(
            f"DATABASES[{alias!r}] sets CONN_MAX_AGE without Django's connection pool: under "
            "ASGI each request runs in a new thread, so persistent connections pile up, one "
            "per thread, and are never reused.",
            hint='Set CONN_MAX_AGE = 0 and OPTIONS["pool"] = True (needs psycopg[pool]).',
            id="asgi.W002",
        )
        for alias, database in settings.DATABASES.items()
        if database.get("ENGINE", "").endswith("postgresql")
        and database.get("CONN_MAX_AGE", 0) != 0
        and not database.get("OPTIONS", {}).get("pool")
    ]


@checks.register("asgi")
def check_static_files_stream_asynchronously(app_configs, **kwargs):
    storage = settings.STORAGES.get("staticfiles", {}).get("BACKEND", "")
    configured = [
        name
        for name in [*settings.MIDDLEWARE, *settings.INSTALLED_APPS, storage]
        if name.startswith("whitenoise")
    ]
    if not configured:
        return []
    return [
        checks.Warning(
            f"WhiteNoise is configured ({', '.join(configured)}): under ASGI it serves files "
            'through synchronous iterators, so Django warns "StreamingHttpResponse must '
            'consume synchronous iterators" and buffers every file in a thread.',
            hint="Use ServeStatic, its ASGI-capable fork: servestatic.middleware."
            "ServeStaticMiddleware and servestatic.storage.CompressedManifestStaticFilesStorage.",
            id="asgi.W003",
        )
    ]


@checks.register("asgi", deploy=True)
def check_websocket_origins_are_restricted(app_configs, **kwargs):
    if settings.DEBUG or "*" not in settings.ALLOWED_HOSTS or not apps.is_installed("channels"):
        return []
    return [
        checks.Warning(
            'ALLOWED_HOSTS contains "*": the WebSocket origin check then trusts any host name '
            "that leads to this server, so a page on a domain of an attacker's that resolves to "
            "it (DNS rebinding) can open sockets as the signed-in user.",
            hint="List the site's own host names in DJANGO_ALLOWED_HOSTS.",
            id="asgi.W004",
        )
    ]


@checks.register("asgi")
def check_runserver_runs_the_asgi_server(app_configs, **kwargs):
    app = get_commands().get("runserver")
    if app in ("asgi_runtime", "daphne"):
        return []
    return [
        checks.Error(
            f"`manage.py runserver` is {app}'s, Django's WSGI server: it serves no WebSockets "
            "and skips the ASGI handler, and says nothing about it.",
            hint='List "asgi_runtime" before django.contrib.staticfiles in INSTALLED_APPS: its '
            "runserver runs the server of Procfile.",
            id="asgi.E005",
        )
    ]


@checks.register("asgi")
def check_servers_load_the_asgi_application(app_configs, **kwargs):
    global _running
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return [
            checks.Error(
                "ASGI_APPLICATION is not set.",
                hint=f'Set ASGI_APPLICATION = "{settings.ROOT_URLCONF.split(".")[0]}'
                '.asgi.application".',
                id="asgi.E006",
            )
        ]
    errors = []
    was_running, _running = _running, True
    try:
        # At start-up (serving.py) the server is importing it right now: it fails on its own.
        application = import_string(path) if not was_running else callable
    except Exception as error:  # whatever asgi.py raises is what a server would see
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        errors.append(
            checks.Error(
                f"ASGI_APPLICATION {path!r} cannot be imported: {message}",
                hint="Fix the import; every server loads this object.",
                id="asgi.E006",
            )
        )
    else:
        if not callable(application):
            errors.append(
                checks.Error(
                    f"ASGI_APPLICATION {path!r} is not an ASGI application (not callable).",
                    id="asgi.E006",
                )
            )
    finally:
        _running = was_running
    module, _, name = path.rpartition(".")
    served = next((word for word in procfile_command() if word.endswith(f":{name}")), None)
    if served and served != f"{module}:{name}":
        errors.append(
            checks.Error(
                f"Procfile serves {served!r}, but ASGI_APPLICATION is {path!r}.",
                hint="Make them name the same object: the servers load the Procfile's.",
                id="asgi.E006",
            )
        )
    return errors


@checks.register("asgi")
def check_procfile_runs_an_asgi_server(app_configs, **kwargs):
    command = procfile_command()
    server = server_name(command)
    worker = option(command, "--worker-class", "-k") or ""
    wsgi_server = server in WSGI_SERVERS and not worker.startswith(ASGI_WORKER_CLASSES)
    if not (wsgi_server or any(word.endswith(".wsgi:application") for word in command)):
        return []
    return [
        checks.Error(
            f"Procfile starts a WSGI server or application ({' '.join(command)}): it serves "
            "no WebSockets and runs every async view in a thread of its own.",
            hint="Serve asgi.py's application with an ASGI server (uvicorn, daphne, hypercorn, "
            "granian), or gunicorn with -k uvicorn_worker.UvicornWorker.",
            id="asgi.E007",
        )
    ]


@checks.register("asgi")
def check_channels_has_a_layer(app_configs, **kwargs):
    if not apps.is_installed("channels") or getattr(settings, "CHANNEL_LAYERS", None):
        return []
    return [
        checks.Warning(
            "Channels is installed but CHANNEL_LAYERS is empty: consumers have no channel "
            "layer, so groups (rooms) and messages between connections do not work.",
            hint="Configure CHANNEL_LAYERS (in-memory for one process, Redis for more).",
            id="asgi.W008",
        )
    ]


@checks.register(checks.Tags.database)
def check_databases_accept_connections(app_configs, databases=None, **kwargs):
    """Run by `migrate` (and `check --database`): a missing database fails at once, with the
    server's own reason, instead of after the connection pool's timeout."""
    errors = []
    for alias in databases or []:
        connection = connections[alias]
        try:
            # (The ignore: only PostgreSQL's connections have a pool.)
            if connection.vendor == "postgresql" and connection.pool:  # type: ignore[attr-defined]
                # Imported by name: a project on SQLite has no psycopg to type-check against.
                psycopg = importlib.import_module("psycopg")
                params = connection.get_connection_params()
                psycopg.connect(**params, connect_timeout=5).close()
            else:
                connection.ensure_connection()
        except Exception as error:  # the driver's own reason, whatever its class
            reason = " ".join(str(error).split())
            name = connection.settings_dict.get("NAME")
            if connection.vendor == "postgresql":
                hint = f"Start PostgreSQL and create the database (createdb {name})"
            else:
                hint = "Check that the database's directory exists and is writable"
            errors.append(
                checks.Error(
                    f"Cannot connect to the {alias!r} database ({name}): {reason}",
                    hint=f"{hint}, or set DATABASE_URL.",
                    id="asgi.E009",
                )
            )
    return errors


SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
DEVELOPMENT_MAIL_BACKENDS = {
    f"django.core.mail.backends.{name}.EmailBackend"
    for name in ("console", "dummy", "filebased", "locmem")
}
# Development's console backend (mail.py), which Django 6.1's check does not know.
CONSOLE_MAIL_BACKEND = "asgi_runtime.mail.ConsoleEmailBackend"


def default_mailer():
    """The backend and the mail server of the default mailer: Django 6.1's MAILERS, or the
    EMAIL_* settings before it."""
    if hasattr(settings, "MAILERS"):
        mailer = settings.MAILERS.get("default", {})
        return mailer.get("BACKEND", SMTP_BACKEND), mailer.get("OPTIONS", {}).get("host")
    return settings.EMAIL_BACKEND, settings.EMAIL_HOST


@checks.register("asgi", deploy=True)
def check_production_can_send_email(app_configs, **kwargs):
    if settings.DEBUG or not apps.is_installed("allauth.account"):
        return []
    backend, host = default_mailer()
    default_sender = settings.DEFAULT_FROM_EMAIL == global_settings.DEFAULT_FROM_EMAIL
    hint = (
        "Set EMAIL_URL to the mail server, e.g. smtp+tls://user:password@smtp.example.com:587 "
        "(README.md, Email)."
    )
    if backend == SMTP_BACKEND and not host:
        problem = "no mail server is configured"
    elif backend == CONSOLE_MAIL_BACKEND or (
        # Django 6.1 reports its own itself (mail.E001).
        backend in DEVELOPMENT_MAIL_BACKENDS and not hasattr(settings, "MAILERS")
    ):
        problem = f"the email backend ({backend}) sends nothing"
    elif backend == SMTP_BACKEND and default_sender:
        problem = (
            f"it would come from Django's default sender, {settings.DEFAULT_FROM_EMAIL}, which "
            "mail servers refuse"
        )
        hint = (
            "Set DJANGO_DEFAULT_FROM_EMAIL to an address of a domain the mail server lets you "
            'send from, e.g. "Example <noreply@example.com>" (README.md, Email).'
        )
    else:
        return []
    verification = getattr(settings, "ACCOUNT_EMAIL_VERIFICATION", "optional")
    return [
        checks.Error(
            f"The site sends email (password reset, and email verification, "
            f"{verification!r}) but {problem}: nobody could reset a password or, with "
            "mandatory verification, log in after signing up.",
            hint=hint,
            id="asgi.E012",
        )
    ]


@checks.register("asgi")
def check_production_runs_tasks_in_a_worker(app_configs, **kwargs):
    if settings.DEBUG:
        return []
    from .tasks import DummyBackend, ImmediateBackend, task_backends

    problems = {
        ImmediateBackend: "runs each task inside the request that enqueues it",
        DummyBackend: "runs no task at all: every task enqueued vanishes",
    }
    return [
        checks.Error(
            f"TASKS[{alias!r}] is {type(backend).__name__}, which {problem}, in production.",
            hint='Use the database backend, run by `manage.py tasks_worker`: "BACKEND": '
            '"django_tasks_db.DatabaseBackend" (README.md, "Background tasks").',
            id="asgi.E013",
        )
        for alias, backend in ((alias, task_backends[alias]) for alias in task_backends.settings)
        for kind, problem in problems.items()
        if isinstance(backend, kind)
    ]


def missing_static_manifest():
    """Outside debug, the manifest of collected static files, if it is missing: without it every
    page that links a static file answers 500 ("Missing staticfiles manifest entry")."""
    if settings.DEBUG:
        return None
    storage = storages["staticfiles"]
    if not isinstance(storage, ManifestFilesMixin):
        return None
    manifest = storage.manifest_storage
    if manifest.exists(storage.manifest_name):
        return None
    return manifest.path(storage.manifest_name)


def check_static_files_were_collected():
    """Run at server start-up only: `migrate` and `collectstatic` run before the files are."""
    missing = missing_static_manifest()
    if missing is None:
        return []
    return [
        checks.Error(
            f"Static files were not collected: {missing} does not exist, so every page that "
            "links a static file would answer 500.",
            hint="Run `python manage.py collectstatic --noinput` when deploying, before starting "
            "the server (the Dockerfile does it at build time).",
            id="asgi.E011",
        )
    ]


def run_checks_at_start_up():
    """What `runserver` does before serving: an error stops start-up, one line each."""
    global _running
    if _running:
        return
    _running = True
    try:
        # No database: since Django 6.1, run_checks() without `databases` gives the model checks
        # every database, and a JSONField's check then queries it (SQLite), at import time.
        messages = checks.run_checks(databases=[]) + check_static_files_were_collected()
    finally:
        _running = False
    errors = []
    for message in messages:
        if message.is_silenced():
            continue
        line = f"{message.id}: {message.msg}" + (f" HINT: {message.hint}" if message.hint else "")
        if message.is_serious():
            errors.append(line)
        else:
            logger.warning("%s", line)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        # 3 is uvicorn's code for a worker that could not start: its supervisor then stops,
        # rather than start the worker again, and again. Every server exits non-zero.
        raise SystemExit(3)
