"""
The demo chat room comes out as the generated README says, and nothing project-wide goes with
it: checks, tests, lint and type checking still pass, WebSocket handshakes are still refused
cleanly, and runserver still runs the ASGI server.
"""

import re
import shutil

import pytest
import websockets

from harness import BIN, PYTHON, Server, environment, fetch, free_port, run, websocket
from matrix import OPTIONS, chat_answers
from projects import bake, deploy, start_production_server

pytestmark = pytest.mark.slow


def demo_lines(readme):
    """The lines README.md's "Removing the demo" section says to delete, in backquotes."""
    section = readme.split("### Removing the demo", 1)[1].split("\n#", 1)[0]
    return re.findall(r"`([^`]*rooms[^`]*)`", section, re.IGNORECASE)


def remove_the_demo(project):
    readme = (project.path / "README.md").read_text()
    documented = demo_lines(readme)
    removed = []
    for name in ("settings.py", "urls.py", "routing.py"):
        path = project.path / project.slug / name
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not any(part in line for part in documented)]
        removed += [line.strip() for line in lines if line not in kept]
        path.write_text("".join(kept))
    shutil.rmtree(project.path / "rooms")
    return removed


@pytest.fixture(params=[s for s in OPTIONS["server"] if s in ("uvicorn", "hypercorn")])
def project_without_demo(request, cookies):
    project = bake(cookies, chat_answers(request.param, "in-memory"), project_name="No Demo")
    removed = remove_the_demo(project)
    assert len(removed) == 4, removed
    deploy(project)
    return project


def test_the_project_still_checks_and_tests_clean(project_without_demo):
    project = project_without_demo
    check = project.manage("check", "--deploy", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stdout
    tests = run(
        project.path,
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        project.production_env(),
    )
    assert tests.returncode == 0, tests.stdout
    lint = run(project.path, [BIN / "ruff", "check", "."], project.production_env())
    assert lint.returncode == 0, lint.stdout
    types = run(project.path, [BIN / "mypy", "--cache-dir", "/dev/null", "."], environment())
    assert types.returncode == 0, types.stdout
    assert "rooms" not in (project.path / project.slug / "settings.py").read_text()


def test_handshakes_are_still_refused_and_pages_still_served(project_without_demo, tmp_path):
    with start_production_server(project_without_demo, tmp_path / "server.log") as server:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            with websocket(server, "/ws/rooms/lobby/"):
                pass
        assert refused.value.response.status_code == 403
        status, _, body = fetch(server.port, "GET", "/", {"X-Forwarded-Proto": "https"})
        assert status == 200 and b"Chat rooms" not in body
    # The refusal, in one warning line, as Django logs a 404.
    problems = server.log_problems()
    assert len(problems) == 1 and "WebSocket Not Found: /ws/rooms/lobby/" in problems[0]


def test_runserver_still_runs_the_asgi_server(project_without_demo, tmp_path):
    env = environment(PORT=free_port())
    command = "python manage.py runserver --noreload 127.0.0.1:$PORT"
    log = tmp_path / "runserver.log"
    # /healthz is the ASGI application's: Django's WSGI server would answer 404.
    with Server(project_without_demo.path, command, env, log) as runserver:
        pass
    server = project_without_demo.answers["server"]
    assert f"Starting {server} at http://127.0.0.1:{runserver.port}/" in runserver.log
