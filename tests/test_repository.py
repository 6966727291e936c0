"""The template repository itself: what CI runs is what README.md says, and it is lint-clean."""

import re

from harness import BIN, environment, run
from matrix import TEMPLATE


def test_ci_runs_the_test_command_from_the_readme():
    readme = (TEMPLATE / "README.md").read_text()
    section = readme.split("## Run the template's tests", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", section, re.DOTALL).group(1).strip()

    ci_lines = [line.strip() for line in (TEMPLATE / ".ci" / "run").read_text().splitlines()]

    assert command in ci_lines


def test_the_repository_is_ruff_clean():
    for command in (["check", "."], ["format", "--check", "."]):
        result = run(TEMPLATE, [BIN / "ruff", *command], environment())
        assert result.returncode == 0, result.stdout


def test_no_template_line_is_over_120_characters():
    """Jinja makes lines long; the template's own sources stay readable (Django writes the
    migrations)."""
    for path in [
        *(TEMPLATE / "{{cookiecutter.project_slug}}").rglob("*"),
        *(TEMPLATE / "hooks").rglob("*"),
    ]:
        if not path.is_file() or "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert len(line) <= 120, f"{path.relative_to(TEMPLATE)}:{number}: {len(line)}"
