"""Errors under /app are pages in plain words, never the API's JSON (issue 16 item 10): an unknown
page (404), an action URL opened directly (405), a page address with a value it cannot use (422)."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.support import shot


def _is_page(page, response, status: int, heading: str, words: str):
    assert response.status == status
    assert response.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    expect(page.get_by_role("alert")).to_contain_text(words)
    expect(page.get_by_role("link", name="Back to your home page")).to_be_visible()
    assert "{" not in page.locator("main").inner_text()  # no JSON, no raw dicts


def test_unknown_page_action_url_and_bad_address_are_pages(pages):
    page = pages.login("mdt.member")
    r = page.goto("/app/no-such-page")
    _is_page(page, r, 404, "Page not found", "There is no page at this address")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()  # still logged in, menus there
    shot(page, "error-404")
    r = page.goto("/app/tasks/1/complete")
    _is_page(page, r, 405, "Not a page", "for a button on a page")
    shot(page, "error-405")
    r = page.goto("/app/worklist?sort=banana")
    _is_page(page, r, 422, "Check what you entered", "‘sort’ in the page address")
    assert "query.sort" not in page.locator("main").inner_text()
    shot(page, "error-422")
    # the API keeps its JSON errors
    api = page.request.get("/no-such-endpoint")
    assert api.status == 404 and api.headers["content-type"].startswith("application/json")


def test_error_page_without_a_login(pages):
    page = pages.anonymous()
    r = page.goto("/app/no-such-page")
    _is_page(page, r, 404, "Page not found", "There is no page at this address")
    expect(page.get_by_role("link", name=re.compile("Log in|Back to your home page")).first).to_be_visible()
