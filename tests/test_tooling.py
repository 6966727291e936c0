"""
The generated project's own tooling: its CI workflow (valid, and running the README's
commands), type checking (mypy passing on a fresh bake), its pre-commit hooks (passing on a
fresh bake), and its lock file (committed).
"""

import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from harness import BIN, environment, run
from matrix import once_per_server


def workflow(project):
    return yaml.safe_load((project.path / ".github" / "workflows" / "ci.yml").read_text())


def pre_commit_hooks(project):
    config = yaml.safe_load((project.path / ".pre-commit-config.yaml").read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def mypy_environment(project, **variables):
    """Where `uv run mypy` finds mypy here: this suite's environment, as it is (no sync, no
    uv.lock written); one mypy cache per bake, outside the project."""
    return environment(
        UV_NO_SYNC="1",
        UV_PROJECT_ENVIRONMENT=BIN.parent,
        MYPY_CACHE_DIR=project.path.parent / "mypy_cache",
        **variables,
    )


def test_the_ci_workflow_is_a_valid_github_workflow(baked_project):
    result = run(
        baked_project.path,
        [
            BIN / "check-jsonschema",
            *("--builtin-schema", "vendor.github-workflows"),
            ".github/workflows/ci.yml",
        ],
        environment(),
    )
    assert result.returncode == 0, result.stdout


def test_ci_runs_the_commands_the_readme_gives(baked_project):
    readme = (baked_project.path / "README.md").read_text()
    commands = [
        step["run"]
        for job in workflow(baked_project)["jobs"].values()
        for step in job["steps"]
        if "run" in step
    ]
    assert {"uv sync --locked", "uv run mypy .", "uv run pytest"} <= set(commands)
    for command in commands:
        assert command in readme, command


def test_ci_starts_the_services_the_project_uses(baked_project):
    services = workflow(baked_project)["jobs"]["test"].get("services", {})
    answers = baked_project.answers
    assert ("postgres" in services) == (answers["database"] == "postgresql")
    assert ("redis" in services) == (answers["channel_layer"] == "redis")
    for service in services.values():
        assert "--health-cmd" in service["options"]


def test_the_lock_file_is_committed(baked_project):
    ignored = (baked_project.path / ".gitignore").read_text().splitlines()
    assert not any(re.fullmatch(r"/?uv\.lock|\*\.lock", line.strip()) for line in ignored)
    dockerfile = (baked_project.path / "Dockerfile").read_text()
    assert "uv sync --locked --no-dev" in dockerfile


def test_pre_commit_runs_mypy_as_the_readme_says(baked_project):
    readme = (baked_project.path / "README.md").read_text()
    mypy = pre_commit_hooks(baked_project)["mypy"]
    assert mypy["entry"] == "uv run mypy ." and "\nuv run mypy .\n" in readme
    assert mypy["pass_filenames"] is False


@pytest.mark.slow
def test_mypy_finds_nothing(baked_project, tmp_path):
    """The README's `uv run mypy .` on a fresh bake, mypy's cache empty: with no .env and no
    database or Redis running (the settings mypy's Django plugin imports need none)."""
    project = tmp_path / baked_project.slug
    shutil.copytree(baked_project.path, project, ignore=shutil.ignore_patterns(".env"))
    shutil.rmtree(baked_project.path.parent / "mypy_cache", ignore_errors=True)

    result = run(project, [BIN / "uv", "run", "mypy", "."], mypy_environment(baked_project))

    assert result.returncode == 0, result.stdout
    assert "Success: no issues found" in result.stdout


@pytest.mark.slow
def test_pre_commit_passes_on_a_fresh_bake(baked_project, tmp_path):
    """From PyPI: every hook is a local one with its dependencies pinned, but mypy's, which
    runs in the project's environment (here this suite's, test_mypy_finds_nothing's cache)."""
    project = tmp_path / baked_project.slug
    shutil.copytree(baked_project.path, project, ignore=shutil.ignore_patterns("staticfiles"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    # The README's set-up, as written, in a fresh bake.
    readme = (project / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "pre-commit" in b)
    for line in block.splitlines():
        command = shlex.split(line.split("#")[0].replace("uv run ", f"{BIN}/"))
        setup = run(project, command, environment(), timeout=120)
        assert setup.returncode == 0, f"{line}: {setup.stdout}"
    # The commit runs the hooks too.
    env = mypy_environment(baked_project)
    for command in ([*git, "add", "-A"], [*git, "commit", "-qm", "baked"]):
        subprocess.run(command, cwd=project, env=env, check=True)

    result = run(project, [BIN / "pre-commit", "run", "--all-files"], env, timeout=600)

    assert result.returncode == 0, result.stdout
    assert (
        subprocess.run(
            ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True
        ).stdout
        == ""
    )


@pytest.mark.slow
@once_per_server
def test_honcho_runs_production_without_the_development_env_file(baked_project):
    """honcho reads .env over exported variables; the README's way round it works."""
    readme = (baked_project.path / "README.md").read_text()
    assert "`honcho -e /dev/null start`" in readme
    show = ["run", "python", "-c", "import os; print(os.environ['DJANGO_DEBUG'])"]
    env = environment(DJANGO_DEBUG="false")
    honcho = str(BIN / "honcho")
    with_dot_env = run(baked_project.path, [honcho, *show], env)
    without = run(baked_project.path, [honcho, "-e", "/dev/null", *show], env)
    assert with_dot_env.stdout.split()[-1] == "true"  # .env's, over the exported "false"
    assert without.stdout.split()[-1] == "false"
