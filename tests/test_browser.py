"""
The demo page at / in a real browser (Debian's headless Chromium, driven by Playwright):
two pages join one room, a message typed in one appears in the other. Once on one process
with the in-memory layer, once across two processes sharing Redis. Screenshots are kept in
each test's temporary directory.
"""

import contextlib
import shutil

import pytest
from conftest import OPTIONS, unavailable
from harness import HTTPS, Server, free_port, procfile_command
from playwright.sync_api import expect, sync_playwright

# Headless as root, and quiet on a closed network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium")
    if not chromium:
        unavailable("chromium not found: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(
    params=[(server, layer) for server in OPTIONS["server"] for layer in OPTIONS["channel_layer"]],
    ids=lambda param: "-".join(param),
)
def chat_project(request, prepared_projects):
    server, layer = request.param
    answers = {"server": server, "websockets": True, "channel_layer": layer, "database": "sqlite"}
    return prepared_projects(answers)


def join(page, url):
    page.goto(url)
    page.fill("#room", "browsers")
    page.click("#join button")
    expect(page.locator("#log")).to_contain_text('Joined room "browsers".')


def test_two_pages_chat_in_one_room(browser, chat_project, request, tmp_path):
    redis = chat_project.answers["channel_layer"] == "redis"
    variables = {"REDIS_URL": request.getfixturevalue("own_redis").url} if redis else {}
    with contextlib.ExitStack() as running:
        # With Redis, each page talks to a server process of its own.
        servers = [
            running.enter_context(
                Server(
                    chat_project.path,
                    procfile_command(chat_project.path),
                    chat_project.production_env(PORT=free_port(), **variables),
                    tmp_path / f"server-{number}.log",
                )
            )
            for number in range(2 if redis else 1)
        ]
        context = browser.new_context(extra_http_headers=HTTPS)
        running.callback(context.close)
        first, second = context.new_page(), context.new_page()
        join(first, f"http://127.0.0.1:{servers[0].port}/")
        join(second, f"http://127.0.0.1:{servers[-1].port}/")

        first.fill("#message", "hello from the first page")
        first.press("#message", "Enter")

        expect(second.locator("#log")).to_contain_text("anonymous: hello from the first page")
        expect(first.locator("#log")).to_contain_text("anonymous: hello from the first page")
        second.screenshot(path=tmp_path / "second-page.png")
    assert (tmp_path / "second-page.png").stat().st_size > 0
    for server in servers:
        assert server.log_problems() == []
