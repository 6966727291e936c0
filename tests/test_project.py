"""The generated project as its developers meet it: lint, Django's checks, its own tests."""

import pytest

from harness import BIN, PYTHON, environment, free_port, procfile_command, run

pytestmark = pytest.mark.slow


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
    result = run(
        deployed_project.path,
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
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
            result = run(deployed_project.path, command, env, timeout=30)

            # hypercorn 0.18 loses its worker's exit status and exits 0 (see README.md).
            if command[0] != "/bin/sh" or deployed_project.answers["server"] != "hypercorn":
                assert result.returncode != 0
            assert result.stdout.strip().splitlines() == [
                f"ImproperlyConfigured: {variable} is not set. Set it in the environment; for local"
                " development, copy .env.example to .env (it turns DJANGO_DEBUG on)."
            ], command
