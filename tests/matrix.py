"""Every multiple-choice and yes/no question of cookiecutter.json, and their combinations."""

import itertools
import json
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent
CONTEXT = json.loads((TEMPLATE / "cookiecutter.json").read_text())

# Each question with all of its answers: a list is a choice, a boolean is yes or no.
OPTIONS = {
    key: value if isinstance(value, list) else [True, False]
    for key, value in CONTEXT.items()
    if not key.startswith("_") and isinstance(value, list | bool)
}
ALL_COMBINATIONS = [
    dict(zip(OPTIONS, answers, strict=True)) for answers in itertools.product(*OPTIONS.values())
]


def makes_sense(answers):
    """A Redis channel layer without WebSockets is refused at bake time."""
    return answers["websockets"] or answers["channel_layer"] == "in-memory"


COMBINATIONS = [answers for answers in ALL_COMBINATIONS if makes_sense(answers)]
NONSENSE = [answers for answers in ALL_COMBINATIONS if not makes_sense(answers)]


def chat_answers(server, channel_layer="redis", database="sqlite"):
    """The answers of a project with WebSockets (the demo's chat rooms), on `server`."""
    return {
        "server": server,
        "websockets": True,
        "channel_layer": channel_layer,
        "database": database,
    }


def combination_id(answers):
    """uvicorn-websockets-redis-postgresql, daphne-no-websockets-in-memory-sqlite, ..."""
    return "-".join(
        (key if value else f"no-{key}") if isinstance(value, bool) else str(value)
        for key, value in answers.items()
    )


def only_when(condition):
    """Run a per-combination test only for the combinations `condition(answers)` accepts.

    The others are deselected at collection, not skipped: in CI nothing may be skipped.
    """
    return pytest.mark.only_when(condition)


with_websockets = only_when(lambda answers: answers["websockets"])
without_websockets = only_when(lambda answers: not answers["websockets"])
# For what depends on the server alone: one combination each (with WebSockets when the test
# needs them).
once_per_server = only_when(
    lambda answers: not answers["websockets"] and answers["database"] == "sqlite"
)
once_per_server_with_websockets = only_when(
    lambda answers: (
        answers["websockets"]
        and answers["channel_layer"] == "in-memory"
        and answers["database"] == "sqlite"
    )
)


def pytest_collection_modifyitems(config, items):
    selected, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("only_when")
        params = item.callspec.params.values() if hasattr(item, "callspec") else []
        answers = next((p for p in params if isinstance(p, dict) and "server" in p), None)
        if marker and answers and not marker.args[0](answers):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
