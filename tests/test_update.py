"""
Taking template changes into a generated project later, with cruft (README.md): a change made
in the project and a change made in the template since both arrive, and nothing else moves.
"""

import json
import shutil
import subprocess

import pytest

from harness import BIN, environment, run
from matrix import TEMPLATE

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]


def git(directory, *args):
    completed = subprocess.run(
        [*GIT, *args], cwd=directory, capture_output=True, text=True, check=True
    )
    return completed.stdout


@pytest.fixture
def template_repository(tmp_path):
    """A copy of this template as a git repository of its own, as a user's cruft sees it."""
    copy = tmp_path / "template"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "commit", "-qm", "template")
    return copy


def test_cruft_brings_template_changes_and_keeps_the_projects_own(template_repository, tmp_path):
    projects = tmp_path / "projects"
    created = run(
        tmp_path,
        [
            *(BIN / "cruft", "create", "--no-input", "--output-dir", projects),
            *("--extra-context", json.dumps({"project_name": "Kept Up"})),
            template_repository,
        ],
        environment(),
    )
    assert created.returncode == 0, created.stdout
    project = projects / "kept_up"
    assert json.loads((project / ".cruft.json").read_text())["template"]
    secret = (project / ".env").read_text()
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "generated")

    # The team changes its project...
    views = project / "users" / "views.py"
    views.write_text(views.read_text() + "\n# The team's own line.\n")
    git(project, "commit", "-qam", "our change")
    # ...and the template moves on.
    health = template_repository / "{{cookiecutter.project_slug}}" / "asgi_runtime"
    (health / "health.py").write_text(
        (health / "health.py").read_text() + "\n# A template improvement.\n"
    )
    git(template_repository, "commit", "-qam", "improve health.py")

    updated = run(project, [BIN / "cruft", "update", "--skip-apply-ask"], environment())

    assert updated.returncode == 0, updated.stdout
    assert "# The team's own line." in views.read_text()
    assert "# A template improvement." in (project / "asgi_runtime" / "health.py").read_text()
    changed = git(project, "status", "--porcelain").split("\n")
    assert sorted(line[3:] for line in changed if line) == [".cruft.json", "asgi_runtime/health.py"]
    assert (project / ".env").read_text() == secret
