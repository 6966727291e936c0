"""
The generated Dockerfile and compose.yaml, built and run for real with podman. There is no
container registry here: containers.py builds stand-ins for the official python, postgres and
redis images from Debian's packages, under the names the files use, so both files are tested
unmodified. Each server's project is baked, locked and built once per run.
"""

import http.client
import json
import re
import time

import pytest
from websockets.sync.client import connect as ws_connect

import containers
from harness import BIN, environment, fetch, get_json, receive_json, run, wait_for
from matrix import OPTIONS
from projects import bake
from services import unavailable

pytestmark = pytest.mark.slow

EVERYTHING = {"websockets": True, "channel_layer": "redis", "database": "postgresql"}
PRODUCTION = {
    "DJANGO_SECRET_KEY": "container-test-" + "k" * 50,
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
}


@pytest.fixture(scope="session")
def stand_in_images():
    """The stand-in base images, built on first use and cached between runs."""
    try:
        timings = containers.ensure_images()
    except containers.ToolMissingError as missing:
        unavailable(str(missing))
    print(f"\nstand-in images: {timings}")
    containers.cleanup_leftovers()
    yield timings
    containers.cleanup_leftovers()


def locked_project(cookies, answers):
    """A baked project with its uv.lock, as after the README's first command."""
    project = bake(cookies, answers, project_name="Boxed")
    locked = run(project.path, [BIN / "uv", "lock"], environment(), timeout=300)
    assert locked.returncode == 0, locked.stdout
    return project


@pytest.fixture(scope="session", params=OPTIONS["server"])
def boxed_project(request, cookies_session, stand_in_images):
    """A project with every option, and its image built from the Dockerfile."""
    project = locked_project(cookies_session, {"server": request.param, **EVERYTHING})
    began = time.monotonic()
    with containers.built_image(project.path, extra_args=["--format", "docker"]) as image:
        print(f"\n{request.param} image built in {time.monotonic() - began:.1f} s")
        yield project, image


def test_the_image_runs_unprivileged_and_answers_its_health_check(boxed_project):
    _, image = boxed_project
    with containers.run_container(image, port=8000, env=PRODUCTION) as box:
        box.wait_for_http("/healthz", timeout=60)
        assert box.exec("id", "-u").stdout.strip() == "10001"
        assert box.exec("id", "-u", "root").returncode == 0  # root exists, it is not used
        wait_for(
            lambda: containers.podman("healthcheck", "run", box.name, check=False).returncode == 0,
            30,
            "the image's HEALTHCHECK",
        )
        # Static files were collected at build time; the code is not the user's to change.
        assert box.exec("test", "-f", "staticfiles/staticfiles.json").returncode == 0
        assert box.exec("test", "-w", "manage.py", check=False).returncode != 0


def test_the_image_has_no_development_tools(boxed_project):
    _, image = boxed_project
    with containers.run_container(image, env=PRODUCTION, command=["sleep", "30"]) as box:
        for tool in ("pytest", "ruff", "uv"):
            assert box.exec("which", tool, check=False).returncode != 0, tool


def sqlite_project_in_a_container(project, image):
    with containers.run_container(image, port=8000, env=PRODUCTION) as box:
        box.exec("python", "manage.py", "migrate", "--noinput")
        box.wait_for_http("/healthz", timeout=60)
        return box.exec("ls", "-n", "/data").stdout


def test_with_sqlite_the_database_lives_in_a_volume_the_user_can_write(
    cookies_session, stand_in_images
):
    project = locked_project(
        cookies_session, {"server": "uvicorn", **EVERYTHING, "database": "sqlite"}
    )
    with containers.built_image(project.path, extra_args=["--format", "docker"]) as image:
        listing = sqlite_project_in_a_container(project, image)
    assert "db.sqlite3" in listing and " 10001 " in listing


def ready_status(stack, index=1):
    """/readyz of one web container: (status, body), or (None, None) while it starts."""
    try:
        return get_json(stack.port("web", 8000, index), "/readyz")
    except (OSError, http.client.HTTPException):
        return None, None


def room_client(stack, index):
    port = stack.port("web", 8000, index)
    return ws_connect(
        f"ws://127.0.0.1:{port}/ws/rooms/boxed/",
        origin=f"http://127.0.0.1:{port}",
        open_timeout=10,
    )


def busiest_rooms(stack):
    """The /rooms/ page's list of the busiest rooms, which the worker's tasks count."""
    try:
        _, _, page = fetch(stack.port("web", 8000), "GET", "/rooms/")
    except (OSError, http.client.HTTPException):
        return ""
    listed = re.search(r'<p id="busiest">(.*?)</p>', page.decode(), re.S)
    return " ".join(listed.group(1).split()) if listed else ""


WAITING_TASKS = (
    "from django_tasks_db.models import DBTaskResult; print(DBTaskResult.objects.ready().count())"
)


def test_the_compose_stack_shares_rooms_runs_tasks_and_tells_what_is_down(boxed_project):
    project, _ = boxed_project
    began = time.monotonic()
    with containers.compose_project(project.path / "compose.yaml", env={"WEB_PORT": ""}) as stack:
        # podman-compose ignores `condition:`: start in the order the conditions describe.
        stack.up("db", "redis", build=True)
        stack.wait_healthy("db", "redis")
        stack.compose("run", "--rm", "migrate")
        stack.up("web", scale={"web": 2}, no_deps=True)
        stack.up("worker", no_deps=True)
        for index in (1, 2):
            wait_for(lambda i=index: ready_status(stack, i)[0] == 200, 60, f"web {index} ready")
        print(f"\ncompose stack ready in {time.monotonic() - began:.1f} s")

        with room_client(stack, 1) as alice, room_client(stack, 2) as bob:
            for sender, text in ((alice, "across replicas"), (bob, "and back")):
                sender.send(json.dumps({"message": text}))
                assert [receive_json(client)["message"] for client in (alice, bob)] == [text] * 2
        # Each member's messages are counted as it leaves, by a task the worker service runs.
        wait_for(lambda: "boxed (2 messages)" in busiest_rooms(stack), 60, "the worker's count")
        # `docker compose stop`: SIGTERM; between tasks the worker exits at once, cleanly.
        stack.stop("worker", timeout=30)
        [worker] = stack.containers("worker")
        assert worker["ExitCode"] == 0, stack.logs("worker")

        # The image's documented worker command (Dockerfile, README.md), with --batch to exit
        # once nothing is left: it runs what was enqueued while no worker ran.
        with room_client(stack, 1) as carol:
            carol.send(json.dumps({"message": "while the worker is away"}))
            receive_json(carol)
        waiting = ["python", "manage.py", "shell", "--no-imports", "-c", WAITING_TASKS]
        wait_for(lambda: stack.exec("web", *waiting).stdout.strip() == "1", 30, "carol's task")
        assert "boxed (2 messages)" in busiest_rooms(stack)
        documented = ["python", "manage.py", "tasks_worker"]
        stack.compose("run", "--rm", "--no-deps", "worker", *documented, "--batch")
        assert "boxed (3 messages)" in busiest_rooms(stack)

        for service, check in (("redis", "redis"), ("db", "database")):
            stack.stop(service)
            wait_for(lambda: ready_status(stack)[0] == 503, 30, f"{service} reported down")
            assert ready_status(stack)[1]["checks"][check] == "down"
            stack.start(service)
            stack.wait_healthy(service)
        wait_for(lambda: ready_status(stack)[0] == 200, 60, "ready again")
