"""The template repository itself: what CI runs is what README.md tells people to run."""

import re

from conftest import TEMPLATE


def test_ci_runs_the_test_command_from_the_readme():
    readme = (TEMPLATE / "README.md").read_text()
    section = readme.split("## Run the template's tests", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", section, re.DOTALL).group(1).strip()

    ci_lines = [line.strip() for line in (TEMPLATE / ".ci" / "run").read_text().splitlines()]

    assert command in ci_lines
