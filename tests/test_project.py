"""The generated project as its developers meet it: lint, Django's checks, its own tests."""

from harness import BIN, PYTHON, environment, run


def test_ruff_finds_nothing_to_fix(project):
    for command in (["check", "."], ["format", "--check", "."]):
        result = run(project.path, [BIN / "ruff", *command], environment())
        assert result.returncode == 0, result.stdout


def test_django_check_passes_in_development(project):
    # The .env written at bake time: debug on, its own secret.
    result = project.manage("check", "--fail-level", "WARNING", env=project.development_env())
    assert result.returncode == 0, result.stdout


def test_deploy_check_passes_in_production(project):
    result = project.manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout
    assert "no issues" in result.stdout


def test_the_projects_own_tests_pass(project):
    result = run(
        project.path,
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        project.production_env(DJANGO_DEBUG="true"),
    )
    assert result.returncode == 0, result.stdout
    assert " passed" in result.stdout and "skipped" not in result.stdout


def test_no_deprecation_warnings_on_start(project):
    result = run(
        project.path,
        [PYTHON, "-W", "error::DeprecationWarning", "-W", "error::PendingDeprecationWarning",
         "-c", f"import {project.slug}.asgi"],
        project.production_env(),
    )
    assert result.returncode == 0, result.stdout


def test_a_missing_secret_key_stops_start_up_with_one_clear_line(project):
    for variable in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"):
        result = project.manage("check", env=project.production_env(**{variable: ""}))

        assert result.returncode != 0
        assert result.stdout.strip().splitlines() == [
            f"ImproperlyConfigured: {variable} is not set. Set it in the environment"
            " (or in .env for local development); see .env.example."
        ]
