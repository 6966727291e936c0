"""
Baked projects, at three stages a user knows: baked (files only), deployed (backing services,
migrations, static files, an admin user), and running (the production command, serving).
"""

import contextlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import PYTHON, Server, environment, free_port, procfile_command, run
from matrix import COMBINATIONS, TEMPLATE, combination_id
from services import database

PROBE = Path(__file__).resolve().parent / "probe"
ADMIN_USER = {"username": "admin", "password": secrets.token_urlsafe(16)}
# The admin as createsuperuser makes them, their address verified as if they had followed the
# link emailed at their first sign-in (production's mandatory verification): they sign in to
# the admin through the site's login.
CREATE_ADMIN_USER = f"""
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
admin = get_user_model().objects.create_superuser(
    {ADMIN_USER["username"]!r}, "admin@example.com", {ADMIN_USER["password"]!r}
)
EmailAddress.objects.create(user=admin, email=admin.email, verified=True, primary=True)
"""


@dataclass
class Project:
    path: Path
    answers: dict
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))
    # What the bake wrote, before anything ran in the project.
    baked_files: list = field(default_factory=list)

    @property
    def slug(self):
        return self.path.name

    def production_env(self, **variables):
        """Production: no debug, no .env, secret and hosts from the environment."""
        values = {
            "DJANGO_DEBUG": "false",
            "DJANGO_READ_DOT_ENV": "false",
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "HOST": "127.0.0.1",
            # A mail server is part of production (check --deploy: asgi.E012). Nothing listens
            # there: a test that sends email starts its own (test_accounts.py).
            "EMAIL_URL": "smtp://127.0.0.1:9",
            "DJANGO_DEFAULT_FROM_EMAIL": "noreply@example.com",
            # The rooms' tests connect as anonymous clients (production's default is signed-in
            # users only: test_accounts.py).
            "ROOMS_REQUIRE_LOGIN": "false",
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

    def probe_env(self, **variables):
        """Production, plus the test-only views of tests/probe (see probe_settings.py)."""
        return self.production_env(
            PYTHONPATH=PROBE,
            DJANGO_SETTINGS_MODULE="probe_settings",
            PROBED_PROJECT=self.slug,
            **variables,
        )

    def manage(self, *args, env=None):
        return run(self.path, [PYTHON, "manage.py", *args], env or self.production_env())


def bake(cookies, answers, **more):
    """Bake with pytest-cookies (an isolated cookiecutter configuration): a Project."""
    result = cookies.bake(extra_context={**answers, **more}, template=str(TEMPLATE))
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    files = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file())
    return Project(path, answers, baked_files=files)


def deploy(project, *more_steps, env=None):
    """What a deploy runs before starting the server: migrate, collectstatic, and more."""
    for args in (["migrate", "--noinput"], ["collectstatic", "--noinput"], *more_steps):
        completed = project.manage(*args, env=env)
        assert completed.returncode == 0, completed.stdout


@pytest.fixture(scope="session", params=COMBINATIONS, ids=combination_id)
def baked_project(request, cookies_session):
    """One project per combination of answers, baked once per run: files only."""
    return bake(cookies_session, request.param, project_name="Demo Site")


@pytest.fixture(scope="session")
def deployed_project(baked_project, request):
    """The baked project with its backing services, migrated, static files collected and an
    admin user created: what a deploy does before starting the server."""
    answers = baked_project.answers
    with contextlib.ExitStack() as stack:
        if answers["database"] == "postgresql":
            postgres = request.getfixturevalue("postgres")
            baked_project.database_url = stack.enter_context(database(postgres))
        if answers["channel_layer"] == "redis":
            baked_project.redis_url = request.getfixturevalue("redis_server").url
        deploy(baked_project, ["shell", "-c", CREATE_ADMIN_USER])
        yield baked_project


def start_production_server(project, log, port=None, **variables):
    """The Procfile's command, in production mode, with the probe views, on `port` or a free
    one."""
    env = project.probe_env(PORT=port or free_port(), **variables)
    return Server(project.path, procfile_command(project.path), env, log)


def start_worker(project, log, **variables):
    """The Procfile's `worker:` line, in production mode, with the probe's tasks; ready once it
    has looked for tasks of lost workers and started polling."""
    env = project.probe_env(**variables)
    command = procfile_command(project.path, process="worker")
    return Server(project.path, command, env, log, ready_path=lambda log: "Starting worker" in log)


@pytest.fixture(scope="session")
def production_server(deployed_project, tmp_path_factory):
    """The production server of a deployed project, shared by the tests of its combination."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with start_production_server(deployed_project, log) as server:
        yield server


@pytest.fixture(scope="session")
def deployed_chat_project(cookies_session):
    """A factory: the deployed project (SQLite) for a set of answers, baked once per run and
    shared by the tests that ask for the same answers."""
    deployed = {}

    def deployed_for(answers):
        key = combination_id(answers)
        if key not in deployed:
            deployed[key] = bake(cookies_session, answers, project_name="Chat Demo")
            deploy(deployed[key])
        return deployed[key]

    return deployed_for
