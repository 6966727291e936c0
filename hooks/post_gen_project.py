"""Trim the baked project to the answers given, write a local .env, record the template
commit in .cruft.json, print the next steps.

Runs with the generated project as the working directory. Needs no network. Safe to run
again on an existing project: it only removes what the answers exclude and never overwrites an
existing .env or .cruft.json. cruft runs it again each time it renders the template to compare
with the project (`cruft update`, `cruft diff`): those runs print nothing.
"""

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

# Cookiecutter renders this file before running it: the answers arrive as JSON data, never
# pasted into code.
ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")
SLUG = ANSWERS["project_slug"]
SERVER = ANSWERS["server"]
WEBSOCKETS = ANSWERS["websockets"]
CHANNEL_LAYER = ANSWERS["channel_layer"]
DATABASE = ANSWERS["database"]

# Every path that only some answers need: path -> whether this bake keeps it.
KEEP = {
    "hypercorn.toml": SERVER == "hypercorn",
    "rooms": WEBSOCKETS,
    f"{SLUG}/routing.py": WEBSOCKETS,
    "asgi_runtime/consumers.py": WEBSOCKETS,
    "asgi_runtime/limits.py": WEBSOCKETS,
    "asgi_runtime/origins.py": WEBSOCKETS,
    "asgi_runtime/tests/test_origins.py": WEBSOCKETS,
    "asgi_runtime/sentinel.py": CHANNEL_LAYER == "redis",
    "asgi_runtime/tests/test_limits.py": WEBSOCKETS,
    "asgi_runtime/tests/test_consumers.py": WEBSOCKETS,
}


def remove_unused():
    for path, keep in KEEP.items():
        path = Path(path)
        if keep or not path.exists():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_dot_env():
    """A development .env with a fresh secret: never a cookiecutter variable (replay files)."""
    dot_env = Path(".env")
    if dot_env.exists():
        return
    example = Path(".env.example").read_text()
    secret = secrets.token_urlsafe(50)
    dot_env.write_text(example.replace("DJANGO_SECRET_KEY=", f"DJANGO_SECRET_KEY={secret}", 1))


def git(directory, *args):
    """A git command's output in `directory`, or None without git or a repository there."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def template_folder():
    """The template folder cookiecutter rendered, as an absolute path; None when cruft runs
    this (it records the template itself) or the folder cannot be found."""
    repo_dir = ANSWERS.get("_repo_dir")
    if not repo_dir or "_commit" in ANSWERS:
        return None
    if Path(repo_dir).is_absolute():
        candidates = [Path(repo_dir)]
    else:
        # Relative to where cookiecutter started, while this runs in the new project. Meanwhile
        # cookiecutter works in the template folder (Linux shows where); shells set PWD.
        candidates = [Path(f"/proc/{os.getppid()}/cwd")]
        if Path(os.environ.get("PWD", "")).is_absolute():
            candidates.append(Path(os.environ["PWD"], repo_dir))
    for candidate in candidates:
        if (candidate / "cookiecutter.json").is_file():
            return candidate.resolve()
    return None


def record_template_commit():
    """Write .cruft.json as `cruft create` does when cookiecutter rendered a git checkout of
    the template: its address, commit and the answers (answers only: the .env secret is never
    one). `cruft update` then brings every template change made since; without it, `cruft link`
    would record the template's latest commit, as if this project already had every change."""
    cruft_file = Path(".cruft.json")
    folder = template_folder()
    if cruft_file.exists() or folder is None:
        return
    commit = git(folder, "rev-parse", "HEAD")
    prefix = git(folder, "rev-parse", "--show-prefix")
    # The template itself must be in that commit, not just inside some other repository.
    if not commit or git(folder, "cat-file", "-e", f"HEAD:{prefix}cookiecutter.json") is None:
        return
    template = ANSWERS["_template"]
    if not Path(template).is_absolute() and ":" in template:
        # A clone cookiecutter made itself (gh:org/name, a URL): what it cloned.
        template = git(folder, "remote", "get-url", "origin")
    else:
        # A checkout of your own: its path, as `cruft create` records it.
        template = git(folder, "rev-parse", "--show-toplevel")
    if not template:
        return
    # In cookiecutter.json's order, as cruft writes them (cookiecutter hands them over sorted).
    order = list(json.loads((folder / "cookiecutter.json").read_text()))
    answers = {key: ANSWERS[key] for key in order if key in ANSWERS and key != "_template"}
    answers.update(_template=template, _commit=commit)
    state = {
        "template": template,
        "commit": commit,
        "checkout": ANSWERS.get("_checkout"),
        "context": {"cookiecutter": answers},
        "directory": prefix.rstrip("/") or None,
    }
    text = json.dumps(state, ensure_ascii=False, indent=2, separators=(",", ": "))
    cruft_file.write_text(text + "\n")


def rendered_by_cruft_to_compare():
    """`cruft update` and `cruft diff` render the template into a temporary folder of their own,
    to compare with the project; `cruft create`, like cookiecutter, renders where it was asked."""
    if "_commit" not in ANSWERS:  # cookiecutter itself
        return False
    folder = Path.cwd().resolve().parent
    return (
        folder.parent == Path(tempfile.gettempdir()).resolve()
        and folder.name.startswith("tmp")
        and [path.name for path in folder.iterdir()] == [Path.cwd().name]
    )


def quick_start():
    """The commands of README.md's quick start, the one place they are written."""
    section = Path("README.md").read_text().split("## Quick start", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()


def next_steps():
    steps = [f"cd {SLUG}"]
    if DATABASE == "postgresql":
        steps.append(f"createdb {SLUG}  # on your PostgreSQL, or set DATABASE_URL in .env")
    if CHANNEL_LAYER == "redis":
        steps.append("redis-server --daemonize yes  # Redis must be running (or set REDIS_URL)")
    return [*steps, *quick_start()]


def main():
    remove_unused()
    write_dot_env()
    record_template_commit()
    if rendered_by_cruft_to_compare():
        return
    print(f"\nCreated {SLUG}/, served by {SERVER}. Next steps (README.md says more):\n")
    for step in next_steps():
        print(f"    {step}")
    print()
    if not Path(".cruft.json").exists() and "_commit" not in ANSWERS:
        print('No template commit recorded: README.md, "Taking template updates", says how.\n')


if __name__ == "__main__":
    main()
