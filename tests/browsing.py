"""
A real browser for the tests that need one: Debian's headless Chromium, driven by Playwright
(the `browser` fixture), and what a person types into the site's forms.
"""

import shutil

import pytest
from playwright.sync_api import sync_playwright

from services import unavailable

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
def browser():
    chromium = shutil.which("chromium")
    if not chromium:
        unavailable("chromium not found: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def fill_in_sign_up(page, site, username, password):
    """The sign-up form, filled in and sent as a person would."""
    page.goto(f"{site}/accounts/signup/")
    page.fill("#id_email", f"{username}@example.com")
    page.fill("#id_username", username)
    page.fill("#id_password1", password)
    page.fill("#id_password2", password)
    page.click("main form button[type=submit]")


def policy_violations(context):
    """A list that fills with what the Content Security Policy blocks in `context`'s pages, as
    Chromium reports it on the console ("Refused to execute inline script because it violates
    the following Content Security Policy directive: ...")."""
    found = []

    def record(message):
        if "Content Security Policy" in message.text:
            found.append(f"{message.page.url if message.page else ''}: {message.text}")

    context.on("console", record)
    return found
