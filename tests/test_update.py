"""
Taking template changes into a generated project later, with the commands the generated
README.md gives ("Taking template updates"), run as written: what the template changed since the
project was generated arrives, the team's own changes stay, nothing else moves, and where both
changed the same lines the file holds the conflict markers that section names.

The commands start with `uvx`: they install cruft and typer from the package index (uv's cache
keeps them between runs).
"""

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest

from harness import BIN, environment
from matrix import TEMPLATE

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
HEALTH = "asgi_runtime/health.py"
VIEWS = "users/models.py"
TEMPLATE_LINE = "# A template improvement."
TEAMS_LINE = "# The team's own line."
NEXT_STEPS = "Next steps"


def git(directory, *args):
    completed = subprocess.run(
        [*GIT, *args], cwd=directory, capture_output=True, text=True, check=True, timeout=60
    )
    return completed.stdout


def command_env():
    """A clean environment, plus what uv needs to reach its package index from here."""
    reach = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("UV_") or name.lower() in ("http_proxy", "https_proxy", "no_proxy")
    }
    return environment(**reach)


def run(directory, args, answers=""):
    """A command, its prompts answered from `answers`; stdout and stderr merged."""
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=directory,
        env=command_env(),
        input=answers,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


@pytest.fixture
def template_repository(tmp_path):
    """A copy of this template as a git repository of its own, as a user's cruft sees it."""
    copy = tmp_path / "template"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "commit", "-qm", "template")
    return copy


@pytest.fixture
def cookiecutter_config(tmp_path):
    """Where cookiecutter keeps its clones and replay files: in this test's folder."""
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(
        f"cookiecutters_dir: {tmp_path / 'cookiecutters'}\nreplay_dir: {tmp_path / 'replay'}\n"
    )
    return config


def template_file(template_repository, relative):
    return template_repository / "{{cookiecutter.project_slug}}" / relative


def change_template(template_repository, relative, change):
    path = template_file(template_repository, relative)
    path.write_text(change(path.read_text()))
    git(template_repository, "commit", "-qam", f"change {relative}")


def change_project(project, relative, change):
    path = project / relative
    path.write_text(change(path.read_text()))
    git(project, "commit", "-qam", f"change {relative}")


def add_line(line):
    return lambda text: f"{text}\n{line}\n"


def reword_second_line(words):
    return lambda text: "\n".join([text.split("\n")[0], words, *text.split("\n")[2:]])


def update_section(project):
    readme = (project / "README.md").read_text()
    return re.split(r"\n#+ ", readme.split("### Taking template updates", 1)[1], maxsplit=1)[0]


def readme_commands(project):
    """The commands "Taking template updates" gives, in code blocks and in text: by cruft command."""
    commands = {}
    for command in re.findall(r"(?:^|`)(uvx [^`\n]+)", update_section(project), re.MULTILINE):
        words = shlex.split(command)
        commands[words[words.index("cruft") + 1]] = words
    assert sorted(commands) == ["diff", "link", "update"], commands
    return commands


def commit_as_generated(project):
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "generated")


def changed_files(project):
    return sorted(line[3:] for line in git(project, "status", "--porcelain").splitlines())


def bake_with_cookiecutter(tmp_path, template, config, *answers):
    """The template's own README: `cookiecutter <template>`, from tmp_path."""
    baked = run(
        tmp_path,
        [
            *(BIN / "cookiecutter", "--no-input", "--config-file", config),
            *("--output-dir", "projects", template, "project_name=Kept Up", *answers),
        ],
    )
    assert baked.returncode == 0, baked.stdout
    assert baked.stdout.count(NEXT_STEPS) == 1, baked.stdout
    return tmp_path / "projects" / "kept_up", baked.stdout


def test_cruft_create_then_update_brings_template_changes_and_keeps_the_projects_own(
    template_repository, tmp_path
):
    created = run(
        tmp_path,
        [
            *(BIN / "cruft", "create", "--no-input", "--output-dir", tmp_path / "projects"),
            *("--extra-context", json.dumps({"project_name": "Kept Up"})),
            template_repository,
        ],
    )
    assert created.returncode == 0, created.stdout
    assert created.stdout.count(NEXT_STEPS) == 1, created.stdout
    project = tmp_path / "projects" / "kept_up"
    recorded = json.loads((project / ".cruft.json").read_text())
    assert recorded["commit"] == git(template_repository, "rev-parse", "HEAD").strip()
    secret = (project / ".env").read_text()
    commit_as_generated(project)
    commands = readme_commands(project)

    change_project(project, VIEWS, add_line(TEAMS_LINE))
    change_template(template_repository, HEALTH, add_line(TEMPLATE_LINE))

    # `cruft diff`, as the README says, shows the team's change (reversed), not the template's.
    diff = run(project, commands["diff"])
    assert diff.returncode == 0, diff.stdout
    assert f"-{TEAMS_LINE}" in diff.stdout and TEMPLATE_LINE not in diff.stdout
    assert NEXT_STEPS not in diff.stdout

    updated = run(project, commands["update"], answers="y\n")

    assert updated.returncode == 0, updated.stdout
    assert "Good work!" in updated.stdout and NEXT_STEPS not in updated.stdout
    assert TEAMS_LINE in (project / VIEWS).read_text()
    assert TEMPLATE_LINE in (project / HEALTH).read_text()
    assert changed_files(project) == [".cruft.json", HEALTH]
    assert (project / ".env").read_text() == secret


@pytest.mark.parametrize("source", ["checkout", "url"])
def test_a_plain_cookiecutter_bake_takes_every_template_change_made_since(
    template_repository, cookiecutter_config, tmp_path, source
):
    """`cookiecutter path/to/template` (a relative path) or `cookiecutter <a git URL>`: the
    project records the commit it came from, so the update starts there, with its answers."""
    template = "template" if source == "checkout" else f"git+file://{template_repository}"
    baked_at = git(template_repository, "rev-parse", "HEAD").strip()
    project, _ = bake_with_cookiecutter(
        tmp_path, template, cookiecutter_config, "server=daphne", "websockets=no"
    )
    recorded = json.loads((project / ".cruft.json").read_text())
    address = str(template_repository) if source == "checkout" else f"file://{template_repository}"
    assert (recorded["template"], recorded["commit"]) == (address, baked_at)
    answers = recorded["context"]["cookiecutter"]
    assert answers["server"] == "daphne" and answers["websockets"] is False
    assert answers["_commit"] == baked_at
    assert not {"_output_dir", "_repo_dir", "_checkout"} & set(answers)
    secret = (project / ".env").read_text().split("DJANGO_SECRET_KEY=")[1].split("\n")[0]
    assert len(secret) >= 50 and secret not in (project / ".cruft.json").read_text()
    commit_as_generated(project)

    # The template moves on: this is the change `cruft link` would have marked as taken.
    change_template(template_repository, HEALTH, add_line(TEMPLATE_LINE))
    change_project(project, VIEWS, add_line(TEAMS_LINE))
    updated = run(project, readme_commands(project)["update"], answers="y\n")

    assert updated.returncode == 0, updated.stdout
    assert NEXT_STEPS not in updated.stdout
    assert TEMPLATE_LINE in (project / HEALTH).read_text()
    assert TEAMS_LINE in (project / VIEWS).read_text()
    # The answers held: nothing a daphne project without WebSockets lacks came back.
    assert changed_files(project) == [".cruft.json", HEALTH]
    assert json.loads((project / ".cruft.json").read_text())["commit"] != baked_at


def test_the_same_lines_changed_on_both_sides_are_left_as_the_conflict_markers_the_readme_names(
    template_repository, cookiecutter_config, tmp_path
):
    project, _ = bake_with_cookiecutter(tmp_path, "template", cookiecutter_config)
    commit_as_generated(project)
    change_project(project, HEALTH, reword_second_line("The team's wording."))
    change_template(template_repository, HEALTH, reword_second_line("The template's wording."))

    updated = run(project, readme_commands(project)["update"], answers="y\n")

    assert updated.returncode == 0, updated.stdout
    markers = re.findall(r"`(<{7} \w+|={7}|>{7} \w+)`", update_section(project))
    assert len(markers) == 3, markers
    lines = (project / HEALTH).read_text().splitlines()
    ours, theirs = "The team's wording.", "The template's wording."
    start = lines.index(markers[0])
    assert lines[start : start + 5] == [markers[0], ours, markers[1], theirs, markers[2]]
    # "git status lists it as unmerged": both modified.
    assert f"UU {HEALTH}" in git(project, "status", "--porcelain").splitlines()
    assert not list(project.rglob("*.rej"))


def test_a_project_linked_at_the_commit_it_was_generated_from_takes_every_change_since(
    template_repository, cookiecutter_config, tmp_path
):
    """A bake from a template that is no git checkout records nothing and says so; the README's
    `cruft link`, answered as the section says, links it at the right commit."""
    unversioned = tmp_path / "unversioned"
    shutil.copytree(template_repository, unversioned, ignore=shutil.ignore_patterns(".git"))
    baked_at = git(template_repository, "rev-parse", "HEAD").strip()
    project, output = bake_with_cookiecutter(tmp_path, unversioned, cookiecutter_config)
    assert not (project / ".cruft.json").exists()
    assert '"Taking template updates"' in output
    commit_as_generated(project)
    change_template(template_repository, HEALTH, add_line(TEMPLATE_LINE))

    link = readme_commands(project)["link"]
    assert link[-1] == "https://github.com/org/django-asgi-template"
    # The answers given at the bake (project_name, then the defaults), then the commit.
    answers = "Kept Up\n" + "\n" * 8 + f"{baked_at}\n"
    linked = run(project, [*link[:-1], template_repository], answers=answers)
    assert linked.returncode == 0, linked.stdout
    assert json.loads((project / ".cruft.json").read_text())["commit"] == baked_at
    git(project, "add", ".cruft.json")
    git(project, "commit", "-qm", "link to the template")

    updated = run(project, readme_commands(project)["update"], answers="y\n")

    assert updated.returncode == 0, updated.stdout
    assert TEMPLATE_LINE in (project / HEALTH).read_text()
    assert changed_files(project) == [".cruft.json", HEALTH]
