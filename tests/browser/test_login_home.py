"""Login, logout, a home page per role, CSRF on every form, and the basics of accessibility on
every page (one h1, a skip link to the main content, labelled controls, no script)."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.support import AMINA, shot

HOMES = {
    "clinical.lead": ("Clinical lead home", ["Worklist", "Case conference", "Patients", "Audit", "Protocols"]),
    "mdt.member": ("MDT member home", ["Worklist", "Case conference", "Patients", "Protocols"]),
    "practice.staff": ("Practice team home", ["Worklist", "Patients", "Audit", "Protocols"]),
    "auditor": ("Audit home", ["Audit", "Access log", "Protocols"]),
    "admin": ("Service administration home", ["Access log", "Protocols"]),
}
ALL_LINKS = {"Worklist", "Case conference", "Patients", "Audit", "Access log", "Protocols"}


def test_login_required_then_back_to_the_page_asked_for(pages):
    page = pages.anonymous()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/app/login\?next=%2Fapp%2F$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in to carepath")
    page.goto(f"/app/patients/{AMINA}")
    expect(page).to_have_url(re.compile(r"/app/login\?next="))
    page.get_by_label("Username").fill("mdt.member")
    page.get_by_label("Password").fill("mdt.member-demo-pw")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(f"/app/patients/{AMINA}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Care plan: Amina Begum")


def test_wrong_password(pages):
    page = pages.anonymous()
    page.goto("/app/login")
    page.get_by_label("Username").fill("mdt.member")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_label("Username")).to_have_value("mdt.member")
    shot(page, "login-refused")


@pytest.mark.parametrize("username", list(HOMES))
def test_home_page_per_role(pages, username):
    title, links = HOMES[username]
    page = pages.login(username)
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    nav = page.get_by_role("navigation", name="Main")
    for name in links:
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    for name in ALL_LINKS - set(links):
        expect(nav.get_by_role("link", name=name, exact=True)).to_have_count(0)
    shot(page, f"home-{username.replace('.', '-')}")


def test_mdt_member_home_counts_link_to_the_worklist(pages):
    page = pages.login("mdt.member")
    page.get_by_role("link", name=re.compile("overdue")).click()
    expect(page).to_have_url(re.compile(r"/app/worklist\?overdue=yes$"))
    expect(page.locator("#overdue-yes")).to_be_checked()


def test_logout(pages):
    page = pages.login("auditor")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/app/login$"))
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    page.goto("/app/audit")
    expect(page).to_have_url(re.compile(r"/app/login\?next="))


def test_forms_need_the_csrf_token(pages, server):
    page = pages.login("mdt.member")
    # a POST without the form's token, or with someone else's token, is refused and changes nothing
    r = page.request.post("/app/tasks/1/complete", form={"next": "/app/worklist"}, max_redirects=0)
    assert r.status == 403 and "security token" in r.text()
    r = page.request.post("/app/tasks/1/complete", form={"csrf_token": "0" * 64}, max_redirects=0)
    assert r.status == 403
    # the real token, sent from another site, is refused too
    page.goto("/app/worklist")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post("/app/tasks/1/complete", form={"csrf_token": token}, max_redirects=0,
                          headers={"Origin": "https://evil.example"})
    assert r.status == 403 and "another site" in r.text()
    # a token is bound to the session: after logging in again the old one no longer works
    other = pages.login("mdt.member")
    r = other.request.post("/app/tasks/1/complete", form={"csrf_token": token}, max_redirects=0)
    assert r.status == 403
    # the login form has one too
    anon = pages.anonymous()
    r = anon.request.post("/app/login", form={"username": "mdt.member", "password": "mdt.member-demo-pw"}, max_redirects=0)
    assert r.status == 403


A11Y_PAGES = ["/app/", "/app/worklist", "/app/mdt/central-1", "/app/patients", f"/app/patients/{AMINA}",
              f"/app/patients/{AMINA}/plan", "/app/audit", "/app/audit/DM020/patients?protocol=t2dm-annual-care&unit_kind=practice",
              "/app/protocols", "/app/protocols/t2dm-annual-care", "/app/protocols/t2dm-annual-care/diff",
              "/app/protocols/t2dm-annual-care/impact"]

CHECK = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push('no lang on <html>');
  const h1 = document.querySelectorAll('h1');
  if (h1.length !== 1) problems.push(h1.length + ' h1 elements');
  const skip = document.querySelector('a.skip-link');
  if (!skip || skip.getAttribute('href') !== '#main' || !document.getElementById('main')) problems.push('skip link');
  if (document.querySelectorAll('script').length) problems.push('script elements');
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const labelled = (el.id && document.querySelector('label[for="' + el.id + '"]')) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby') || el.closest('label');
    if (!labelled) problems.push('unlabelled ' + el.tagName + ' ' + (el.name || ''));
  }
  for (const b of document.querySelectorAll('button, a')) {
    if (!(b.textContent.trim() || b.getAttribute('aria-label'))) problems.push('nameless ' + b.tagName);
  }
  for (const svg of document.querySelectorAll('svg')) {
    if (svg.getAttribute('role') !== 'img' || !svg.querySelector('title')) problems.push('svg without role/title');
  }
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const dup = ids.filter((x, i) => ids.indexOf(x) !== i);
  if (dup.length) problems.push('duplicate ids ' + dup.slice(0, 3).join(','));
  return problems;
}"""


def test_pages_meet_the_basics_of_accessibility(pages):
    page = pages.login("clinical.lead")
    for url in A11Y_PAGES:
        response = page.goto(url)
        assert response.status == 200, url
        assert page.evaluate(CHECK) == [], url
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "script-src" not in csp, url
    # the skip link is the first thing the keyboard reaches, and it moves focus to the main content
    page.goto("/app/worklist")
    page.keyboard.press("Tab")
    expect(page.locator("a.skip-link")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("#main$"))
