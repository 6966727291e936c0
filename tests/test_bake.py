"""Baking: every combination renders cleanly, and bad answers leave nothing behind."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from cookiecutter.config import get_user_config

from harness import BIN, environment, procfile_command, run
from matrix import COMBINATIONS, NONSENSE, TEMPLATE, combination_id

LEFTOVER_TEMPLATE_SYNTAX = re.compile(r"\{\{|\{%|cookiecutter\.")
# Sentences about how the template was made have no place in a user's files.
TEMPLATE_SHOP_TALK = re.compile(r"measured here|in our tests", re.IGNORECASE)

# Paths that belong to some answers only: path -> does this bake need it?
OPTIONAL_PATHS = {
    "hypercorn.toml": lambda answers: answers["server"] == "hypercorn",
    "rooms": lambda answers: answers["websockets"],
    "{slug}/routing.py": lambda answers: answers["websockets"],
    "asgi_runtime/consumers.py": lambda answers: answers["websockets"],
    "asgi_runtime/limits.py": lambda answers: answers["websockets"],
    "asgi_runtime/origins.py": lambda answers: answers["websockets"],
    "asgi_runtime/tests/test_limits.py": lambda answers: answers["websockets"],
    "asgi_runtime/tests/test_origins.py": lambda answers: answers["websockets"],
    "asgi_runtime/tests/test_consumers.py": lambda answers: answers["websockets"],
    "asgi_runtime/sentinel.py": lambda answers: answers["channel_layer"] == "redis",
}


def text_files(project):
    for relative in project.baked_files:
        if relative.suffix not in (".pyc", ".sqlite3"):
            yield relative, (project.path / relative).read_text()


def test_no_template_syntax_is_left(baked_project):
    for relative, text in text_files(baked_project):
        assert not LEFTOVER_TEMPLATE_SYNTAX.search(str(relative)), relative
        # Django's template tags look like Jinja's: in HTML, look for variables only.
        leftover = "cookiecutter." if relative.suffix == ".html" else LEFTOVER_TEMPLATE_SYNTAX
        assert not re.search(leftover, text), relative


def test_rendered_text_looks_hand_written(baked_project):
    """No trailing whitespace, runs of blank lines, long lines or shop talk left by Jinja."""
    for relative, text in text_files(baked_project):
        assert text == "" or text.endswith("\n") and not text.endswith("\n\n"), relative
        assert not re.search(r"[ \t]$", text, re.MULTILINE), relative
        assert not TEMPLATE_SHOP_TALK.search(text), relative
        if relative.suffix == ".py":
            # ruff format allows two blank lines, but only before and after a definition.
            for match in re.finditer(r"\n\n\n(.*)", text):
                following = match.group(1)
                before = text[: match.start()].rsplit("\n", 1)[-1]
                assert following.startswith(("def ", "async def ", "class ", "@", "#")) or (
                    before.startswith((" ", ")", "]", "}"))
                ), f"{relative}: two blank lines before {following!r}"
        else:
            assert "\n\n\n" not in text, relative


def test_only_files_of_chosen_options_are_present(baked_project):
    for path, needed in OPTIONAL_PATHS.items():
        exists = (baked_project.path / path.format(slug=baked_project.slug)).exists()
        assert exists == needed(baked_project.answers), path


def test_django_layout(baked_project):
    assert (baked_project.path / "manage.py").is_file()
    for name in ("__init__.py", "settings.py", "urls.py", "asgi.py", "apps.py"):
        assert (baked_project.path / baked_project.slug / name).is_file(), name


def test_dot_env_has_a_fresh_secret_and_is_ignored(baked_project, _cookiecutter_config_file):
    env = dict(
        line.split("=", 1)
        for line in (baked_project.path / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert len(env["DJANGO_SECRET_KEY"]) >= 50
    assert env["DJANGO_DEBUG"] == "true"
    assert ".env" in (baked_project.path / ".gitignore").read_text().splitlines()
    # The secret never reaches cookiecutter's replay files (pytest-cookies keeps them apart).
    replay_dir = Path(get_user_config(str(_cookiecutter_config_file))["replay_dir"])
    replays = [path.read_text() for path in replay_dir.glob("*.json")]
    assert replays and not any(env["DJANGO_SECRET_KEY"] in replay for replay in replays)


def test_readme_shows_the_exact_commands(baked_project):
    readme = (baked_project.path / "README.md").read_text()
    for procfile, processes in (("Procfile", ("web", "worker")), ("Procfile.dev", ("web",))):
        for process in processes:
            assert procfile_command(baked_project.path, procfile, process) in readme, procfile
    # runserver runs the worker in development: a worker: line there would start a second one.
    assert "worker:" not in (baked_project.path / "Procfile.dev").read_text()


def test_every_readme_section_referred_to_exists(baked_project):
    """Comments and messages send readers to README.md sections by name: "Deploying"."""
    readme = (baked_project.path / "README.md").read_text()
    headings = set(re.findall(r"^#+ (.+)$", readme, re.MULTILINE))
    for relative, text in text_files(baked_project):
        for section in re.findall(r'README(?:\.md)?, "([^"]+)"', text):
            assert section in headings, f"{relative} refers to a missing section: {section}"


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


@pytest.mark.parametrize("answers", NONSENSE, ids=combination_id)
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
        (
            "MyProject",
            "has upper-case letters: Python package names are lower case, use 'myproject'",
        ),
        ("class", "is a Python keyword"),
        ("_private", "must start and end with a letter or digit"),
        ("trailing_", "must start and end with a letter or digit"),
        ("json", "would shadow the standard library's 'json' module"),
        ("asyncio", "would shadow the standard library's 'asyncio' module"),
        ("django", "would shadow the 'django' module or package"),
        ("channels", "would shadow the 'channels' module or package"),
        ("uvicorn", "would shadow the 'uvicorn' module or package"),
        ("sqlparse", "would shadow the 'sqlparse' module or package"),
        ("test", "would shadow the 'test' module or package"),
        ("rooms", "would shadow the 'rooms' module or package"),
        ("users", "would shadow the 'users' module or package"),
        ("staticfiles", "would shadow the 'staticfiles' module or package"),
        ("a" * 33, "keep it to 32 or fewer"),
    ],
)
def test_bad_slugs_are_refused_before_any_file_is_written(slug, problem, tmp_path):
    result = cookiecutter_cli(tmp_path, project_slug=slug)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert errors[0].startswith(f"ERROR: project_slug {slug!r}") and problem in errors[0]
    assert not any(tmp_path.iterdir())


def test_free_text_answers_are_data_not_code(tmp_path):
    """Quotes, backslashes and markup in names and descriptions still give valid TOML,
    Python and HTML."""
    result = cookiecutter_cli(
        tmp_path,
        project_name=' Tricky """ <b>Name</b> ',
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
    assert "<b>" not in (project / "tricky" / "templates" / "base.html").read_text()


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("  Chat-Room Service ", "chat_room_service"),
        ("Café Déjà Vu", "cafe_deja_vu"),
        ("Bob's Chat", "bobs_chat"),
        ("2FA Service", "project_2fa_service"),
        ("The Quick Brown Fox Jumps Over The Lazy Dog", "the_quick_brown_fox_jumps_over"),
        ("!!!", "project"),
        # Names that would shadow a module the project imports.
        ("Django", "django_project"),
        ("Email", "email_project"),
        ("Class", "class_project"),
    ],
)
def test_the_default_slug_comes_from_the_name(name, slug, tmp_path):
    result = cookiecutter_cli(tmp_path, project_name=name)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / slug / slug / "asgi.py").is_file()


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_the_longest_package_name_still_formats_cleanly(answers, tmp_path):
    """Names are pasted into code: the longest allowed one must not break ruff's layout."""
    slug = "a_thirty_two_character_long_name"
    assert len(slug) == 32
    result = cookiecutter_cli(tmp_path, **answers, project_slug=slug)
    assert result.returncode == 0, result.stderr
    for command in (["check", "."], ["format", "--check", "."]):
        linted = run(tmp_path / slug, [BIN / "ruff", *command], environment())
        assert linted.returncode == 0, linted.stdout
