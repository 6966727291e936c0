"""
The site in a real browser (Debian's headless Chromium, driven by Playwright), in production
mode: two people sign up, log in and chat from two pages of the demo room, and each page shows
the other's name. Once on one process with the in-memory layer, once across two processes
sharing Redis. Screenshots are kept in each test's temporary directory.
"""

import contextlib
import secrets

import pytest
from playwright.sync_api import expect

from browsing import fill_in_sign_up, policy_violations
from harness import HTTPS, free_port
from matrix import OPTIONS, chat_answers, only_when
from projects import ADMIN_USER, start_production_server

pytestmark = pytest.mark.slow

PASSWORD = secrets.token_urlsafe(12)


@pytest.fixture(
    params=[(server, layer) for server in OPTIONS["server"] for layer in OPTIONS["channel_layer"]],
    ids=lambda param: "-".join(param),
)
def chat_project(request, deployed_chat_project):
    server, layer = request.param
    return deployed_chat_project(chat_answers(server, layer))


def sign_up(page, site, username):
    fill_in_sign_up(page, site, username, PASSWORD)
    expect(page.locator("#username")).to_have_text(username)


def log_out_and_in(page, site, username):
    page.click("nav button[type=submit]")
    expect(page.locator("nav")).to_contain_text("Log in")
    page.goto(f"{site}/accounts/login/")
    page.fill("#id_login", username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    expect(page.locator("#username")).to_have_text(username)


def join(page, site):
    page.goto(f"{site}/rooms/")
    page.fill("#room", "browsers")
    page.click("#join button")
    expect(page.locator("#state")).to_contain_text('Connected to room "browsers".')


def say(page, text):
    page.fill("#message", text)
    page.press("#message", "Enter")


def test_two_people_sign_up_log_in_and_chat(browser, chat_project, request, tmp_path):
    redis = chat_project.answers["channel_layer"] == "redis"
    # With Redis, each person's page talks to a server process of its own.
    ports = [free_port() for _ in range(2 if redis else 1)]
    sites = [f"http://127.0.0.1:{port}" for port in ports]
    # The pages are plain HTTP here, the proxy headers say HTTPS: forms post from http://.
    # No email verification: this is about the chat (test_accounts.py verifies addresses).
    variables = {
        "DJANGO_CSRF_TRUSTED_ORIGINS": ",".join(sites),
        "ACCOUNT_EMAIL_VERIFICATION": "none",
    }
    if redis:
        variables["REDIS_URL"] = request.getfixturevalue("own_redis").url
    with contextlib.ExitStack() as running:
        servers = [
            running.enter_context(
                start_production_server(
                    chat_project, tmp_path / f"server-{port}.log", port, **variables
                )
            )
            for port in ports
        ]
        pages, violations = [], []
        for number, username in enumerate(["alice", "bob"]):
            # A browser of its own per person (no shared cookies), behind a TLS proxy.
            context = browser.new_context(extra_http_headers=HTTPS)
            running.callback(context.close)
            violations.append(policy_violations(context))
            page = context.new_page()
            site = sites[number % len(sites)]
            sign_up(page, site, username)
            log_out_and_in(page, site, username)
            join(page, site)
            pages.append(page)
        alice, bob = pages

        say(alice, "hello from alice")
        expect(bob.locator("#log")).to_contain_text("alice: hello from alice")
        say(bob, "hello from bob")
        expect(alice.locator("#log")).to_contain_text("bob: hello from bob")
        bob.screenshot(path=tmp_path / "bob.png")
        # Read before the servers stop: a page's keep-alive connection can hold a stopping
        # granian worker until it is killed, which granian logs as a warning (README.md).
        problems = [server.log_problems() for server in servers]
    assert (tmp_path / "bob.png").stat().st_size > 0
    assert problems == [[] for _ in servers]
    # The pages' own scripts and styles ran, and the sockets opened, under the policy.
    assert violations == [[], []]


@pytest.fixture(params=OPTIONS["server"])
def one_process_chat_project(request, deployed_chat_project):
    return deployed_chat_project(chat_answers(request.param, "in-memory"))


def test_the_page_reconnects_after_a_server_restart(browser, one_process_chat_project, tmp_path):
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    # The page is plain HTTP here, the proxy headers say HTTPS: its origin must be trusted.
    trusted = {"DJANGO_CSRF_TRUSTED_ORIGINS": site}
    context = browser.new_context(extra_http_headers=HTTPS)
    try:
        page = context.new_page()
        with start_production_server(
            one_process_chat_project, tmp_path / "1.log", port, **trusted
        ) as server:
            join(page, site)
        # The server is gone: the page says it is reconnecting, and keeps trying.
        expect(page.locator("#state")).to_contain_text("reconnecting", timeout=15_000)
        with start_production_server(
            one_process_chat_project, tmp_path / "2.log", port, **trusted
        ) as server:
            expect(page.locator("#state")).to_contain_text(
                'Connected to room "browsers".', timeout=30_000
            )
            say(page, "back again")
            expect(page.locator("#log")).to_contain_text("anonymous: back again")
            page.screenshot(path=tmp_path / "reconnected.png")
        assert server.log_problems() == []
    finally:
        context.close()


@only_when(lambda answers: answers == chat_answers("uvicorn", "in-memory"))
def test_the_admin_works_under_the_content_security_policy(browser, deployed_project, tmp_path):
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    context = browser.new_context(extra_http_headers=HTTPS)
    violations = policy_violations(context)
    try:
        page = context.new_page()
        with start_production_server(
            deployed_project, tmp_path / "server.log", port, DJANGO_CSRF_TRUSTED_ORIGINS=site
        ):
            # The admin sends staff to the site's login, then back.
            page.goto(f"{site}/admin/")
            page.fill("#id_login", ADMIN_USER["username"])
            page.fill("#id_password", ADMIN_USER["password"])
            page.click("main form button[type=submit]")
            expect(page.locator("#user-tools")).to_contain_text(ADMIN_USER["username"])
            # The list's actions (a script of the admin's), and a form with its widgets.
            page.goto(f"{site}/admin/users/user/")
            page.check("#action-toggle")
            expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
            page.goto(f"{site}/admin/users/user/add/")
            page.fill("#id_username", "carol")
            page.fill("#id_password1", PASSWORD)
            page.fill("#id_password2", PASSWORD)
            page.click("input[name=_save]")
            expect(page.locator("#content h1")).to_contain_text("Change user")
            page.screenshot(path=tmp_path / "admin.png")
    finally:
        context.close()
    assert violations == []
