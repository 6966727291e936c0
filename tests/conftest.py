"""
Fixtures: every combination of the template's options, baked once, with the backing
services it needs and its production server running.
"""

import contextlib
import glob
import itertools
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis
from harness import PYTHON, Server, environment, free_port, procfile_command, run

TEMPLATE = Path(__file__).resolve().parent.parent
CONTEXT = json.loads((TEMPLATE / "cookiecutter.json").read_text())

# Every multiple-choice and yes/no question of cookiecutter.json, with all of its answers.
OPTIONS = {
    key: value if isinstance(value, list) else [True, False]
    for key, value in CONTEXT.items()
    if not key.startswith("_") and isinstance(value, list | bool)
}
ALL_COMBINATIONS = [
    dict(zip(OPTIONS, answers, strict=True)) for answers in itertools.product(*OPTIONS.values())
]


def makes_sense(answers):
    """A Redis channel layer without WebSockets is refused at bake time."""
    return answers["websockets"] or answers["channel_layer"] == "in-memory"


COMBINATIONS = [answers for answers in ALL_COMBINATIONS if makes_sense(answers)]


def combination_id(answers):
    return "-".join(
        (key if value else f"no-{key}") if isinstance(value, bool) else str(value)
        for key, value in answers.items()
    )


def only_when(condition):
    """Run a per-combination test only for the combinations `condition(answers)` accepts.

    The others are deselected at collection, not skipped: in CI nothing may be skipped.
    """
    return pytest.mark.only_when(condition)


def pytest_collection_modifyitems(config, items):
    selected, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("only_when")
        params = item.callspec.params.values() if hasattr(item, "callspec") else []
        answers = next((p for p in params if isinstance(p, dict) and "server" in p), None)
        if marker and answers and not marker.args[0](answers):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: whatever it needs, CI must install."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if in_ci() and reporter and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1


def unavailable(reason):
    """Skip where a tool is missing; in CI (CI=true), where nothing may be skipped, fail."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def find_binary(name, install_hint):
    path = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if not path:
        unavailable(f"{name} not found: install {install_hint}")
    return path


# Backing services: throwaway servers of our own on free ports, stopped at the end.


class RedisServer:
    def __init__(self, directory):
        binary = find_binary("redis-server", "Redis (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ]
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path):
    """A Redis for one test alone, which the test may stop and start again."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (initdb, pg_ctl) on a free port, trust auth."""
    initdb = find_binary("initdb", "PostgreSQL (Debian: apt-get install postgresql)")
    pg_ctl = find_binary("pg_ctl", "PostgreSQL (Debian: apt-get install postgresql)")
    # Not under pytest's private temporary directory: the postgres user must reach it.
    data = Path(tempfile.mkdtemp(prefix="template-tests-postgres-"))
    # PostgreSQL refuses to run as root: run it as the postgres user then.
    as_user = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(
        [*as_user, initdb, "-D", data / "db", "-A", "trust", "-U", "postgres"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -h 127.0.0.1 -k {data} -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", data / "db", "-o", options, "-l", data / "log", "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    yield f"postgres://postgres@127.0.0.1:{port}"
    subprocess.run(
        [*as_user, pg_ctl, "-D", data / "db", "-m", "immediate", "stop"], stdout=subprocess.DEVNULL
    )
    shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def database(server_url):
    """A database of its own on the test PostgreSQL server, dropped afterwards."""
    name = f"demo_{secrets.token_hex(4)}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{server_url}/{name}"
    finally:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# The baked projects.


@dataclass
class Project:
    path: Path
    answers: dict
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))

    @property
    def slug(self):
        return self.path.name

    def production_env(self, **variables):
        """Production: no debug, secret and hosts from the environment, behind a proxy."""
        values = {
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "HOST": "127.0.0.1",
        }
        if self.database_url:
            values["DATABASE_URL"] = self.database_url
        if self.redis_url:
            values["REDIS_URL"] = self.redis_url
        return environment(**{**values, **variables})

    def development_env(self, **variables):
        """Development: .env (debug on) plus where this test run's services are."""
        services = {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}
        return environment(**{k: v for k, v in services.items() if v}, **variables)

    def manage(self, *args, env=None):
        return run(self.path, [PYTHON, "manage.py", *args], env or self.production_env())


def bake(cookies, answers, **more):
    return cookies.bake(extra_context={**answers, **more}, template=str(TEMPLATE))


def deploy(project, *more_steps, env=None):
    """What a deploy runs before starting the server: migrate, collectstatic, and more."""
    for args in (["migrate", "--noinput"], ["collectstatic", "--noinput"], *more_steps):
        completed = project.manage(*args, env=env)
        assert completed.returncode == 0, completed.stdout


@pytest.fixture(scope="session")
def prepared_projects(cookies_session):
    """Baked, migrated, static files collected (SQLite), once per set of answers per run:
    the scaling and browser tests share them."""
    baked = {}

    def prepared(answers):
        key = combination_id(answers)
        if key not in baked:
            result = bake(cookies_session, answers, project_name="Chat Demo")
            assert result.exit_code == 0, result.exception
            baked[key] = Project(Path(result.project_path), answers)
            deploy(baked[key])
        return baked[key]

    return prepared


@pytest.fixture(scope="session", params=COMBINATIONS, ids=combination_id)
def project(request, cookies_session):
    """One baked project per combination, shared by every test of that combination."""
    answers = request.param
    result = bake(cookies_session, answers, project_name="Demo Site")
    assert result.exit_code == 0, result.exception
    baked = Project(Path(result.project_path), answers)
    with contextlib.ExitStack() as stack:
        if answers["database"] == "postgresql":
            baked.database_url = stack.enter_context(database(request.getfixturevalue("postgres")))
        if answers["channel_layer"] == "redis" and answers["websockets"]:
            baked.redis_url = request.getfixturevalue("redis_server").url
        yield baked


# A test-only view, added beside the project's own URLs through a settings module of the
# tests' own: what Django sees of the client, and a slow request to shut down in the middle of.
PROBE_SETTINGS = """
from {slug}.settings import *  # noqa: F403

ROOT_URLCONF = "probe_urls"
SECURE_REDIRECT_EXEMPT = [r"^probe/"]
"""
PROBE_URLS = """
import asyncio
from pathlib import Path

from django.http import JsonResponse
from django.urls import include, path


async def client(request):
    return JsonResponse({{"address": request.META["REMOTE_ADDR"], "scheme": request.scheme}})


async def groups(request):
    # How many consumers each group of this process's channel layer holds.
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    # InMemoryChannelLayer.groups, or the Redis pub/sub layer's per-process table.
    members = getattr(layer, "groups", None) or getattr(layer, "_groups", {{}})
    return JsonResponse(
        {{name.removeprefix("asgi__group__"): len(channels) for name, channels in members.items()}}
    )


async def slow(request):
    # Says it has started (a file beside this module), then takes its time.
    (Path(__file__).parent / "slow-request-started").touch()
    await asyncio.sleep(float(request.GET.get("seconds", "2")))
    return JsonResponse({{"slept": True}})


urlpatterns = [
    path("probe/client", client),
    path("probe/slow", slow),
    path("probe/groups", groups),
    path("", include("{slug}.urls")),
]
"""

ADMIN = {"username": "admin", "password": secrets.token_urlsafe(16)}


@pytest.fixture(scope="session")
def probe(project, tmp_path_factory):
    directory = tmp_path_factory.mktemp("probe")
    (directory / "probe_settings.py").write_text(PROBE_SETTINGS.format(slug=project.slug))
    (directory / "probe_urls.py").write_text(PROBE_URLS.format(slug=project.slug))
    return {"PYTHONPATH": directory, "DJANGO_SETTINGS_MODULE": "probe_settings"}


@pytest.fixture(scope="session")
def slow_request_started(probe):
    """The file the probe's slow view touches once a request is inside it."""
    return Path(probe["PYTHONPATH"]) / "slow-request-started"


@pytest.fixture(scope="session")
def prepared(project):
    """Migrated, static files collected, an admin user: what a deploy does before starting."""
    env = project.production_env(
        DJANGO_SUPERUSER_USERNAME=ADMIN["username"],
        DJANGO_SUPERUSER_PASSWORD=ADMIN["password"],
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
    )
    deploy(project, ["createsuperuser", "--noinput"], env=env)
    return project


@pytest.fixture(scope="session")
def server(prepared, probe, tmp_path_factory):
    """The production command (Procfile) running, in production mode, on a free port."""
    env = prepared.production_env(PORT=free_port(), **probe)
    log = tmp_path_factory.mktemp("logs") / "server.log"
    running = Server(prepared.path, procfile_command(prepared.path), env, log)
    yield running
    running.stop()
