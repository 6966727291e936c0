"""Refuse answers that would bake a broken project, before a single file is written.

Cookiecutter runs this before rendering; exiting non-zero aborts the bake and removes the
output directory it created. Each problem is reported on one line.
"""

import json
import keyword
import sys

# Cookiecutter renders this file before running it: the answers arrive as JSON data, never
# pasted into code.
ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")
SLUG = ANSWERS["project_slug"]
WEBSOCKETS = ANSWERS["websockets"]
CHANNEL_LAYER = ANSWERS["channel_layer"]

# Long enough for any sensible package name, short enough that every rendered line fits.
MAX_SLUG_LENGTH = 32

# Names the project itself uses (beside its package, and in its dependency tree): the list
# lives in local_extensions.py, whose package_name filter steers the default away from them.
TAKEN_NAMES = set(json.loads(r"""{{ None | taken_names | tojson }}"""))


def slug_problem(slug):
    if not (slug.isascii() and slug.isidentifier()):
        return (
            f"project_slug {slug!r} is not a valid Python identifier: use lowercase letters, "
            "digits and underscores, not starting with a digit."
        )
    if slug != slug.lower():
        return (
            f"project_slug {slug!r} has upper-case letters: Python package names are lower "
            f"case, use {slug.lower()!r}."
        )
    if len(slug) > MAX_SLUG_LENGTH:
        return (
            f"project_slug {slug!r} is {len(slug)} characters long: keep it to "
            f"{MAX_SLUG_LENGTH} or fewer (it is typed in every import)."
        )
    if keyword.iskeyword(slug):
        return f"project_slug {slug!r} is a Python keyword: choose another name."
    if slug.startswith("_") or slug.endswith("_"):
        return f"project_slug {slug!r} must start and end with a letter or digit."
    if slug.lower() in sys.stdlib_module_names:
        return (
            f"project_slug {slug!r} would shadow the standard library's {slug!r} module: "
            "choose another name."
        )
    if slug.lower() in TAKEN_NAMES:
        return (
            f"project_slug {slug!r} would shadow the {slug!r} module or package the project "
            "uses: choose another name."
        )
    return None


def main():
    problems = [slug_problem(SLUG)]
    if CHANNEL_LAYER == "redis" and not WEBSOCKETS:
        problems.append(
            "channel_layer 'redis' needs websockets: answer websockets=yes, or keep "
            "channel_layer 'in-memory'."
        )
    problems = [problem for problem in problems if problem]
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
