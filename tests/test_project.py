"""The generated project as its developers meet it: lint, Django's checks, its own tests."""

import json
import re
import socket
import time

import pytest

from harness import BIN, PYTHON, Server, environment, free_port, procfile_command, run
from matrix import OPTIONS, only_when
from projects import bake

pytestmark = pytest.mark.slow

WARNINGS_AS_ERRORS = ("-W", "error::pytest.PytestWarning")


def test_ruff_finds_nothing_to_fix(baked_project):
    for command in (["check", "."], ["format", "--check", "."]):
        result = run(baked_project.path, [BIN / "ruff", *command], environment())
        assert result.returncode == 0, result.stdout


def test_django_check_passes_in_development(deployed_project):
    # The .env written at bake time: debug on, its own secret.
    env = deployed_project.development_env()
    result = deployed_project.manage("check", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout


def test_deploy_check_passes_in_production(deployed_project):
    result = deployed_project.manage(
        "check", "--deploy", "--fail-level", "WARNING", "--database", "default"
    )
    assert result.returncode == 0, result.stdout
    assert "no issues" in result.stdout


def test_migrations_match_the_models(deployed_project):
    result = deployed_project.manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout


def test_the_projects_own_tests_pass(deployed_project):
    # pytest's own warnings as errors: one that the test database could not be dropped (a
    # connection an async test opened, still open) is a failure, not a line at the end.
    result = run(
        deployed_project.path,
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *WARNINGS_AS_ERRORS],
        deployed_project.production_env(),
    )
    assert result.returncode == 0, result.stdout
    assert " passed" in result.stdout and "skipped" not in result.stdout


def test_no_deprecation_warnings_on_start(deployed_project):
    result = run(
        deployed_project.path,
        [
            PYTHON,
            *("-W", "error::DeprecationWarning", "-W", "error::PendingDeprecationWarning"),
            *("-c", f"import {deployed_project.slug}.asgi"),
        ],
        deployed_project.production_env(),
    )
    assert result.returncode == 0, result.stdout


def test_a_missing_secret_key_or_host_stops_start_up_with_one_clear_line(deployed_project):
    server = procfile_command(deployed_project.path)
    for variable in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"):
        env = deployed_project.production_env(PORT=free_port(), **{variable: ""})
        for command in (["python", "manage.py", "check"], ["/bin/sh", "-c", f"exec {server}"]):
            result = run(deployed_project.path, command, env, timeout=60)

            assert result.returncode != 0
            # Only the reason, once per process that tried to start (granian tries twice, and
            # logs that it did in lines of its own); no traceback.
            reasons = {
                line for line in result.stdout.splitlines() if "ImproperlyConfigured" in line
            }
            assert reasons == {
                f"ImproperlyConfigured: {variable} is not set. Set it in the environment; for local"
                " development, copy .env.example to .env (it turns DJANGO_DEBUG on)."
            }, command
            assert "Traceback" not in result.stdout
            if deployed_project.answers["server"] != "granian" or command[0] == "python":
                assert len(result.stdout.strip().splitlines()) == 1, result.stdout


# A check's message, as Django prints it: "?: (asgi.E001) ..." or "asgi.E001: ...".
CHECK_MESSAGE = re.compile(r"\b[a-z_]+\.[EW]\d{3}\b")


def test_logs_are_text_in_development_and_json_in_production(deployed_project):
    log = "import logging; logging.getLogger('django').warning('hello')"
    development = deployed_project.manage(
        "shell", "-c", log, env=deployed_project.development_env()
    )
    production = deployed_project.manage("shell", "-c", log)

    assert "WARNING django: hello" in development.stdout
    line = next(line for line in production.stdout.splitlines() if "hello" in line)
    assert json.loads(line)["level"] == "WARNING"


@only_when(lambda answers: answers["database"] == "postgresql")
def test_a_missing_database_is_named_at_once_by_migrate(deployed_project, postgres):
    env = deployed_project.production_env(DATABASE_URL=f"{postgres}/no_such_database")
    began = time.monotonic()

    result = deployed_project.manage("migrate", env=env)

    assert result.returncode != 0
    assert time.monotonic() - began < 10
    assert (
        "asgi.E009" in result.stdout
        and 'database "no_such_database" does not exist' in result.stdout
    )
    assert "Traceback" not in result.stdout


@only_when(lambda answers: answers["websockets"] and answers["channel_layer"] == "in-memory")
def test_several_processes_on_the_in_memory_layer_refuse_to_start(deployed_project):
    env = deployed_project.production_env(PORT=free_port(), WEB_CONCURRENCY="2")
    command = procfile_command(deployed_project.path)
    server = deployed_project.answers["server"]
    if server in ("daphne", "hypercorn"):
        # One process whatever WEB_CONCURRENCY says: no split rooms, nothing to refuse.
        log = deployed_project.path / "one-process.log"
        with Server(deployed_project.path, command, env, log) as one_process:
            assert not CHECK_MESSAGE.search(one_process.log)
        return
    began = time.monotonic()

    result = run(deployed_project.path, ["/bin/sh", "-c", f"exec {command}"], env, timeout=60)

    assert time.monotonic() - began < 10
    # uvicorn's supervisor stops when a worker cannot start, but exits 0 (README.md's table).
    assert result.returncode != 0 or server == "uvicorn"
    refusals = [line for line in result.stdout.splitlines() if "asgi.E001" in line]
    assert refusals and all(line.startswith("asgi.E001: The in-memory") for line in refusals)
    assert len(refusals) <= 2, "a worker that cannot start was started again"
    assert "Traceback" not in result.stdout


# The exit status of a server whose system checks fail at start-up (README.md's table).
FAILED_START = {"uvicorn": 3, "daphne": 3, "hypercorn": 3, "granian": 1}


@pytest.mark.parametrize("server", OPTIONS["server"])
def test_a_failed_check_stops_the_server_at_once(cookies, server):
    """A first deploy that forgot collectstatic: one line, a failure status, no restarts."""
    project = bake(cookies, {"server": server, "websockets": False}, project_name="No Static")
    env = project.production_env(PORT=free_port())
    command = procfile_command(project.path)
    began = time.monotonic()

    result = run(project.path, ["/bin/sh", "-c", f"exec {command}"], env, timeout=60)

    assert time.monotonic() - began < 10
    assert result.returncode == FAILED_START[server], result.stdout
    refusals = [line for line in result.stdout.splitlines() if CHECK_MESSAGE.search(line)]
    assert len(refusals) == 1 and refusals[0].startswith("asgi.E011: Static files"), refusals
    assert "Traceback" not in result.stdout


def test_runserver_on_a_port_in_use_says_so_and_stops(cookies):
    """As Django's runserver: one line and status 1, instead of a server that cannot start and
    a reloader waiting for a file change that cannot free the port."""
    project = bake(cookies, {"server": "uvicorn", "websockets": False}, project_name="Busy Port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run(
            project.path,
            [PYTHON, "manage.py", "runserver", str(port)],
            project.development_env(),
            timeout=60,
        )

    assert result.returncode == 1, result.stdout
    assert result.stdout.strip().splitlines()[-1] == "Error: That port is already in use."
    assert "Traceback" not in result.stdout
