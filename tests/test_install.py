"""
Per server, a project installed from its own pyproject.toml alone, into a fresh environment,
from the package registry, the two ways its README gives: with uv on Python 3.13 (Django 6),
and with pip on this Python (Django 5.2 on 3.11). This proves the dependency list is complete
and both Django versions work; the matrix runs on the tests' own environment. Two servers'
projects use PostgreSQL and Redis, the other two SQLite and the in-memory layer: each database
and layer is installed from scratch, and type-checked with nothing else installed (a SQLite
project has no psycopg).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from harness import BIN, Server, free_port, get_json, procfile_command, run
from matrix import OPTIONS
from projects import bake
from services import database, unavailable

pytestmark = pytest.mark.slow

NEWER_PYTHON = "3.13"
EVERYTHING = {"websockets": True, "channel_layer": "redis", "database": "postgresql"}
# What the other answers miss: SQLite and the in-memory layer, nothing more to install.
SMALLEST = {"websockets": True, "channel_layer": "in-memory", "database": "sqlite"}
# Per server, so that both databases and both layers are installed from scratch on both paths.
FRESH = {"uvicorn": EVERYTHING, "daphne": SMALLEST, "hypercorn": EVERYTHING, "granian": SMALLEST}
ENQUEUE = "from rooms.tasks import count_messages; count_messages.enqueue('lobby', 2)"
COUNTED = "from rooms.models import Room; print(Room.objects.get(name='lobby').messages)"


def runs(python):
    """A real interpreter of that version (pyenv's shims exist for versions not selected)."""
    if not python or not Path(python).exists():
        return False
    check = [python, "-c", f"import sys; assert sys.version.startswith('{NEWER_PYTHON}')"]
    return subprocess.run(check, capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def newer_python():
    candidates = []
    if shutil.which("pyenv"):
        prefix = subprocess.run(["pyenv", "prefix", NEWER_PYTHON], capture_output=True, text=True)
        candidates.append(prefix.stdout.strip() + "/bin/python3")
    candidates.append(shutil.which(f"python{NEWER_PYTHON}"))
    for candidate in candidates:
        if runs(candidate):
            return candidate
    unavailable(f"Python {NEWER_PYTHON} not found: install it (pyenv install {NEWER_PYTHON})")


@pytest.fixture(params=OPTIONS["server"])
def fresh_project(request, cookies, tmp_path):
    """A project of the server's FRESH answers, with a database (and a Redis) of its own."""
    answers = {"server": request.param, **FRESH[request.param]}
    project = bake(cookies, answers, project_name="Fresh Install")
    if answers["channel_layer"] == "redis":
        project.redis_url = request.getfixturevalue("redis_server").url
    if answers["database"] == "sqlite":
        yield project
        return
    with database(request.getfixturevalue("postgres")) as database_url:
        project.database_url = database_url
        yield project


def run_steps(project, env, steps):
    outputs = []
    for step in steps:
        completed = run(project.path, step, env, timeout=600)
        assert completed.returncode == 0, f"{step}:\n{completed.stdout}"
        outputs.append(completed.stdout)
    return outputs


def serves_rooms(project, env, log):
    port = free_port()
    checks = {"database": "ok", "static files": "ok"}
    if project.redis_url:
        checks["redis"] = "ok"
    with Server(project.path, procfile_command(project.path), {**env, "PORT": str(port)}, log):
        assert get_json(port, "/readyz") == (200, {"status": "ok", "checks": checks})
        origin = f"http://127.0.0.1:{port}"
        with ws_connect(
            f"ws://127.0.0.1:{port}/ws/rooms/lobby/", origin=origin, open_timeout=10
        ) as client:
            client.send(json.dumps({"message": "fresh"}))
            assert json.loads(client.recv(timeout=10)) == {"message": "fresh", "user": None}


def test_uv_installs_the_project_and_it_serves(fresh_project, newer_python, tmp_path):
    project = fresh_project
    venv = project.path / ".venv" / "bin"
    env = project.production_env(bin_dir=venv, UV_PYTHON_DOWNLOADS="never")
    uv_run = [BIN / "uv", "run", "--python", newer_python]
    version, *_, worker, counted = run_steps(
        project,
        env,
        [
            [*uv_run, "python", "-c", "import django; print(django.get_version())"],
            [*uv_run, "python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            [*uv_run, "python", "manage.py", "makemigrations", "--check", "--dry-run"],
            [*uv_run, "python", "manage.py", "migrate", "--noinput"],
            [*uv_run, "python", "manage.py", "collectstatic", "--noinput"],
            # What a server does at start-up (after collectstatic: asgi.E011).
            [
                *uv_run,
                "python",
                "-W",
                "error::DeprecationWarning",
                "-c",
                f"import {project.slug}.asgi",
            ],
            [*uv_run, "pytest", "-q", "-p", "no:cacheprovider"],
            # Type checking against Django 6's installed packages (the matrix checks on 5.2).
            [*uv_run, "mypy", "."],
            # A task through the worker process, on Django 6's own django.tasks.
            [*uv_run, "python", "manage.py", "shell", "--no-imports", "-c", ENQUEUE],
            [*uv_run, "python", "manage.py", "tasks_worker", "--batch", "--no-startup-delay"],
            [*uv_run, "python", "manage.py", "shell", "--no-imports", "-c", COUNTED],
        ],
    )
    assert version.strip().splitlines()[-1].startswith("6."), version
    assert "rooms.tasks.count_messages state=SUCCESSFUL" in worker
    assert counted.strip().splitlines()[-1] == "2"
    assert (project.path / "uv.lock").is_file()
    serves_rooms(project, env, tmp_path / "server.log")


def test_pip_installs_the_project_and_it_serves(fresh_project, tmp_path):
    project = fresh_project
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    env = project.production_env(bin_dir=venv / "bin")
    python = venv / "bin" / "python"
    _, version, *_ = run_steps(
        project,
        env,
        [
            [python, "-m", "pip", "install", "--quiet", "."],
            [python, "-c", "import django; print(django.get_version())"],
            [python, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            [python, "manage.py", "migrate", "--noinput"],
            [python, "manage.py", "collectstatic", "--noinput"],
        ],
    )
    assert version.strip().splitlines()[-1].startswith("5.2"), version
    serves_rooms(project, env, tmp_path / "server.log")
