"""The generated project as its developers meet it: lint, Django's checks, its own tests."""

from harness import BIN, PYTHON, environment, free_port, procfile_command, run


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
        [
            PYTHON,
            "-W",
            "error::DeprecationWarning",
            "-W",
            "error::PendingDeprecationWarning",
            "-c",
            f"import {project.slug}.asgi",
        ],
        project.production_env(),
    )
    assert result.returncode == 0, result.stdout


def test_a_missing_secret_key_or_host_stops_start_up_with_one_clear_line(project):
    server = procfile_command(project.path)
    for variable in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"):
        env = project.production_env(PORT=free_port(), **{variable: ""})
        for command in (["python", "manage.py", "check"], ["/bin/sh", "-c", f"exec {server}"]):
            result = run(project.path, command, env, timeout=30)

            # hypercorn 0.18 loses its worker's exit status and exits 0 (see README.md).
            if command[0] != "/bin/sh" or project.answers["server"] != "hypercorn":
                assert result.returncode != 0
            assert result.stdout.strip().splitlines() == [
                f"ImproperlyConfigured: {variable} is not set. Set it in the environment; for local"
                " development, copy .env.example to .env (it turns DJANGO_DEBUG on)."
            ], command
