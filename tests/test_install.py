"""
Per server, a project installed from its own pyproject.toml alone, into a fresh environment,
from the package registry, on Python 3.13 (Django 6), as its README says: `uv run`.
This proves the dependency list is complete; the matrix runs on the tests' Python.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import OPTIONS, Project, bake, database, unavailable
from harness import BIN, Server, free_port, get_json, procfile_command, run
from websockets.sync.client import connect as ws_connect

NEWER_PYTHON = "3.13"


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


@pytest.mark.parametrize("server", OPTIONS["server"])
def test_a_fresh_install_from_pyproject_boots(
    server, cookies, newer_python, postgres, redis_server, tmp_path
):
    answers = {
        "server": server,
        "websockets": True,
        "channel_layer": "redis",
        "database": "postgresql",
    }
    result = bake(cookies, answers, project_name="Fresh Install")
    assert result.exit_code == 0, result.exception
    with database(postgres) as database_url:
        project = Project(Path(result.project_path), answers, database_url, redis_server.url)
        venv = project.path / ".venv" / "bin"
        env = project.production_env(bin_dir=venv, UV_PYTHON_DOWNLOADS="never")

        # What the project's README says: `uv run` creates .venv from pyproject.toml.
        steps = [
            [BIN / "uv", "sync", "--python", newer_python],
            [BIN / "uv", "run", "python", "-c", "import django; print(django.get_version())"],
            [
                BIN / "uv",
                "run",
                "python",
                "-W",
                "error::DeprecationWarning",
                "-c",
                f"import {project.slug}.asgi",
            ],
            [
                BIN / "uv",
                "run",
                "python",
                "manage.py",
                "check",
                "--deploy",
                "--fail-level",
                "WARNING",
            ],
            [BIN / "uv", "run", "python", "manage.py", "migrate", "--noinput"],
            [BIN / "uv", "run", "python", "manage.py", "collectstatic", "--noinput"],
            [BIN / "uv", "run", "pytest", "-q", "-p", "no:cacheprovider"],
        ]
        for step in steps:
            completed = run(project.path, step, env, timeout=600)
            assert completed.returncode == 0, f"{step}:\n{completed.stdout}"
            if "get_version()" in step[-1]:
                assert completed.stdout.strip().startswith("6."), completed.stdout

        port = free_port()
        running = Server(
            project.path,
            procfile_command(project.path),
            {**env, "PORT": str(port)},
            tmp_path / "server.log",
        )
        try:
            assert get_json(port, "/readyz") == (
                200,
                {"status": "ok", "checks": {"database": "ok", "redis": "ok"}},
            )
            origin = f"http://127.0.0.1:{port}"
            with ws_connect(
                f"ws://127.0.0.1:{port}/ws/rooms/lobby/", origin=origin, open_timeout=10
            ) as client:
                client.send(json.dumps({"message": "fresh"}))
                assert json.loads(client.recv(timeout=10)) == {"message": "fresh", "user": None}
        finally:
            running.stop()
        assert running.log_problems() == []
