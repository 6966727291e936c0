"""Baking: every combination renders cleanly, and bad answers leave nothing behind."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import ALL_COMBINATIONS, TEMPLATE, combination_id, makes_sense
from cookiecutter.config import get_user_config
from harness import BIN

LEFTOVER_TEMPLATE_SYNTAX = re.compile(r"\{\{|\{%|cookiecutter\.")

# Files that belong to one option only: (does this bake need it?, path).
OPTIONAL_PATHS = {
    "hypercorn.toml": lambda answers: answers["server"] == "hypercorn",
    "rooms": lambda answers: answers["websockets"],
    "tests/test_rooms.py": lambda answers: answers["websockets"],
    "rooms/management/commands/runserver.py": lambda answers: (
        answers["websockets"] and answers["server"] != "daphne"
    ),
}


def test_no_template_syntax_is_left(project):
    for path in project.path.rglob("*"):
        relative = path.relative_to(project.path)
        assert not LEFTOVER_TEMPLATE_SYNTAX.search(str(relative)), relative
        if path.is_file() and path.suffix != ".pyc":
            assert not LEFTOVER_TEMPLATE_SYNTAX.search(path.read_text()), relative


def test_rendered_text_looks_hand_written(project):
    """No trailing whitespace, no runs of blank lines or missing final newline left by Jinja."""
    for path in project.path.rglob("*"):
        if not path.is_file() or path.suffix in (".pyc", ".sqlite3"):
            continue
        text = path.read_text()
        relative = path.relative_to(project.path)
        assert text == "" or text.endswith("\n") and not text.endswith("\n\n"), relative
        assert not re.search(r"[ \t]$", text, re.MULTILINE), relative
        if path.suffix != ".py":  # ruff format judges Python files
            assert "\n\n\n" not in text, relative


def test_only_files_of_chosen_options_are_present(project):
    for path, needed in OPTIONAL_PATHS.items():
        assert (project.path / path).exists() == needed(project.answers), path


def test_django_layout(project):
    assert (project.path / "manage.py").is_file()
    for name in ("__init__.py", "settings.py", "urls.py", "asgi.py"):
        assert (project.path / project.slug / name).is_file(), name


def test_dot_env_has_a_fresh_secret_and_is_ignored(project, _cookiecutter_config_file):
    env = dict(
        line.split("=", 1)
        for line in (project.path / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert len(env["DJANGO_SECRET_KEY"]) >= 50
    assert env["DJANGO_DEBUG"] == "true"
    assert ".env" in (project.path / ".gitignore").read_text().splitlines()
    # The secret never reaches cookiecutter's replay files (pytest-cookies keeps them apart).
    replay_dir = Path(get_user_config(str(_cookiecutter_config_file))["replay_dir"])
    replays = [path.read_text() for path in replay_dir.glob("*.json")]
    assert replays and not any(env["DJANGO_SECRET_KEY"] in replay for replay in replays)


def test_readme_shows_the_exact_commands(project):
    readme = (project.path / "README.md").read_text()
    for procfile in ("Procfile", "Procfile.dev"):
        line = (project.path / procfile).read_text().strip().removeprefix("web:").strip()
        assert line in readme, procfile


def cookiecutter_cli(output, **answers):
    """Bake as a user does, from the command line, into an empty directory."""
    return subprocess.run(
        [BIN / "cookiecutter", "--no-input", "--output-dir", output, TEMPLATE]
        + [
            f"{key}={'yes' if value is True else 'no' if value is False else value}"
            for key, value in answers.items()
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "answers", [a for a in ALL_COMBINATIONS if not makes_sense(a)], ids=combination_id
)
def test_nonsense_combinations_are_refused(answers, tmp_path):
    result = cookiecutter_cli(tmp_path, **answers)

    assert result.returncode != 0
    assert "ERROR: channel_layer 'redis' needs websockets" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("slug", "problem"),
    [
        ("my-project", "is not a valid Python identifier"),
        ("2fast", "is not a valid Python identifier"),
        ("café", "is not a valid Python identifier"),
        ("class", "is a Python keyword"),
        ("_private", "must start and end with a letter or digit"),
        ("trailing_", "must start and end with a letter or digit"),
        ("json", "would shadow the standard library's 'json' module"),
        ("asyncio", "would shadow the standard library's 'asyncio' module"),
        ("Email", "would shadow the standard library's 'Email' module"),
        ("django", "would shadow the 'django' module or package"),
        ("channels", "would shadow the 'channels' module or package"),
        ("uvicorn", "would shadow the 'uvicorn' module or package"),
        ("sqlparse", "would shadow the 'sqlparse' module or package"),
        ("test", "would shadow the 'test' module or package"),
        ("rooms", "would shadow the 'rooms' module or package"),
        ("staticfiles", "would shadow the 'staticfiles' module or package"),
        ("a" * 33, "keep it to 32 or fewer"),
    ],
)
def test_bad_slugs_are_refused_before_any_file_is_written(slug, problem, tmp_path):
    result = cookiecutter_cli(tmp_path, project_slug=slug)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert errors[0].startswith(f"ERROR: project_slug {slug!r}") and problem in errors[0]
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_free_text_answers_are_data_not_code(tmp_path):
    """Quotes and backslashes in names and descriptions still give valid TOML and Python."""
    result = cookiecutter_cli(
        tmp_path,
        project_name=' Tricky """ Name ',
        project_slug="tricky",
        description='A "quoted" \\d description',
        author_name='O\'Brien "Bob"',
    )
    assert result.returncode == 0, result.stderr
    project = tmp_path / "tricky"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == 'A "quoted" \\d description'
    assert pyproject["project"]["authors"][0]["name"] == 'O\'Brien "Bob"'
    for path in project.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_the_default_slug_comes_from_the_name(tmp_path):
    result = cookiecutter_cli(tmp_path, project_name="  Chat-Room Service ")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "chat_room_service" / "chat_room_service" / "asgi.py").is_file()
