"""#24: the message page, one sign-in and read sessions, in headless Chromium.

The path an operator takes: an alert in chat (another site), a click, the message's
diagnosis in the first screen. The service runs with an API token and a read token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from service.settings import Settings
from tests.browser.test_status_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM
from tests.support import ses
from tests.support.serving import Server, serving

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

WRITE_TOKEN = "w7Kq2mZp9xR4tL8vN3cB6yH1"  # 24+ characters, no placeholder word
READ_TOKEN = "r5Tg8jW2nQ6fD9sA3kE7uM4z"
HOSTILE = "<img src=x onerror=alert(1)>"
BOUNCED = "0100018c-bounce-page-0001"
ADDRESS = "who@gmail.com"
DIAGNOSTIC = "smtp; 550 5.1.1 <who@gmail.com>: Recipient address rejected: User unknown"


def settings() -> Settings:
    return Settings(_env_file=None, api_token=WRITE_TOKEN, read_tokens=f"support:{READ_TOKEN}")


def hard_bounce(now: int) -> list[dict[str, Any]]:
    """A message that waited out one delay, then bounced for good (plus markup in
    what the receiver said, which must stay text)."""
    sent = now - 90_000
    bounce = ses.bounce(BOUNCED, [ADDRESS], now - 30_000, sent_at=sent)
    bounce["bounce"]["reportingMTA"] = "dsn; mx.gmail.example.net"
    bounce["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = f"{DIAGNOSTIC} {HOSTILE}"
    records = [
        ses.send(BOUNCED, [ADDRESS], sent),
        ses.delay(BOUNCED, [ADDRESS], now - 60_000, sent),
        bounce,
    ]
    for record in records:
        record["mail"]["commonHeaders"]["subject"] = f"Your order {HOSTILE}"
    # Other mail of the hour, so the provider and the configuration set have figures.
    for i in range(12):
        other = f"0100018c-other-{i:04d}"
        records.append(ses.send(other, [f"o{i}@gmail.com"], sent))
        records.append(ses.delivery(other, [f"o{i}@gmail.com"], sent + 500 + 400 * i, sent))
    return records


async def seed(server: Server) -> None:
    body = ses.dumps(*hard_bounce(int(time.time() * 1000)))
    headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    async with httpx.AsyncClient(base_url=server.base, headers=headers) as client:
        answer = await client.post("/v1/events", content=body)
        assert answer.status_code == 202 and not answer.json()["rejected"], answer.text


async def compared_side(server: Server) -> str:
    headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    async with httpx.AsyncClient(base_url=server.base, headers=headers) as client:
        (recipient,) = (await client.get(f"/v1/messages/{BOUNCED}")).json()["recipients"]
    provider = recipient.get("provider")
    return f"provider {provider}" if provider else "domain gmail.com"


async def launch(p) -> Browser:
    assert HAVE_CHROMIUM, "install Debian's chromium (bash .ci/run does)"
    return await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


async def sign_in(context: BrowserContext, base: str, token: str) -> Page:
    """Opens the page and signs in through its form, as a person does once."""
    page = await context.new_page()
    await page.goto(base + "/")
    await expect(page.locator("#signin")).to_be_visible(timeout=5_000)
    await page.fill("#signin-token", token)
    await page.click("#signin-form button")
    await expect(page.locator("#signin")).to_be_hidden(timeout=5_000)
    await expect(page.locator("#connection")).to_have_text("live", timeout=5_000)
    return page


def session_cookie(cookies: list[dict[str, Any]]) -> dict[str, Any]:
    (cookie,) = [c for c in cookies if c["name"] == "st_session"]
    return cookie


@contextmanager
def chat_page(target: str) -> Iterator[str]:
    """Another site (``localhost``, not the service's ``127.0.0.1``) showing an
    alert's link, as chat does: a click from it is a cross-site navigation, on which
    a SameSite=Strict cookie is not sent."""
    html = f'<p>SES bounces over 5%</p><a id="alert" href="{target}">Open in ses-tracker</a>'

    class Chat(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Chat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def test_an_alert_link_clicked_in_chat_after_one_sign_in_shows_the_diagnosis_first() -> None:
    async with serving(settings()) as server, async_playwright() as p:
        await seed(server)
        browser = await launch(p)
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        await sign_in(context, server.base, WRITE_TOKEN)
        with chat_page(f"{server.base}/?message={BOUNCED}") as chat:
            page = await context.new_page()
            await page.goto(chat)
            await page.click("#alert")
            await page.wait_for_url(f"{server.base}/?message={BOUNCED}", timeout=5_000)
        # No second sign-in: the page's own calls carry the session.
        card = page.locator(f'.recipient[data-address="{ADDRESS}"]')
        summary = card.locator(".diagnosis-summary")
        await expect(summary).to_be_visible(timeout=5_000)
        await expect(page.locator("#signin")).to_be_hidden()
        # The diagnosis and SES's diagnostic code, in the first screen.
        await expect(summary).to_be_in_viewport()
        await expect(card.locator(".diagnosis-code")).to_have_text("bounce.permanent.general")
        await expect(card.locator(".diagnosis-action")).to_be_in_viewport()
        diagnostic = card.locator(".ses-said dd", has_text="550 5.1.1")
        await expect(diagnostic).to_be_in_viewport()
        await expect(diagnostic).to_contain_text(HOSTILE)  # as text, never as markup
        assert await page.locator("#lookup-result img").count() == 0
        # Everything SES said, the steps, the facts and the stored events.
        said = await card.locator(".ses-said").inner_text()
        for expected in (
            "Permanent / General",
            "5.1.1",
            "failed",
            "mx.gmail.example.net",
            "TransientCommunicationFailure",
        ):
            assert expected in said, expected
        steps = card.locator(".waterfall .step")
        await expect(steps).to_have_count(3)  # send, the delay, the bounce
        await expect(card.locator(".step-bounce .step-time")).to_contain_text("from send")
        compare = card.locator(".compare", has_text="send → bounce")
        # Against the recipient's provider when the API names it, else its domain.
        await expect(compare).to_contain_text(f"{await compared_side(server)}, last hour: p50")
        await expect(compare).to_contain_text("configuration set transactional, last hour")
        await expect(card.locator(".suppression")).to_contain_text("Suppressed (bounce)")
        facts = await page.locator(".message-facts").inner_text()
        for expected in ("transactional", "shop.example", "sender@shop.example", "team"):
            assert expected in facts, expected
        await page.locator("#message-events > summary").click()
        first = page.locator("#message-events .event").last
        await first.locator("summary").click()
        await expect(first.locator("pre")).to_contain_text('"bounce_type": "Permanent"')
        await browser.close()


async def test_a_token_in_the_address_is_posted_and_never_stays_in_it() -> None:
    async with serving(settings()) as server, async_playwright() as p:
        await seed(server)
        browser = await launch(p)
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(
            f"{server.base}/?token={WRITE_TOKEN}&message={BOUNCED}", wait_until="domcontentloaded"
        )
        # Taken out before the document has even finished loading.
        href = await page.evaluate("location.href")
        assert WRITE_TOKEN not in href and "token" not in href, href
        assert href == f"{server.base}/?message={BOUNCED}"
        await expect(page.locator(".diagnosis-summary")).to_be_visible(timeout=5_000)
        assert WRITE_TOKEN not in await page.evaluate("location.href")
        assert await page.evaluate("localStorage.length + sessionStorage.length") == 0
        cookie = session_cookie(await context.cookies())
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert WRITE_TOKEN not in cookie["value"]
        assert await page.evaluate("document.cookie") == ""  # scripts cannot read it
        # A wrong token in a link is not kept either, and the form says why.
        other = await (await browser.new_context()).new_page()
        await other.goto(f"{server.base}/?token=wrong-but-long-enough-token-0")
        await expect(other.locator("#signin-message")).to_contain_text("refused", timeout=5_000)
        assert "token" not in await other.evaluate("location.href")
        await browser.close()


async def test_sign_out_revokes_the_session_and_a_replayed_cookie_is_refused() -> None:
    async with serving(settings()) as server, async_playwright() as p:
        await seed(server)
        browser = await launch(p)
        context = await browser.new_context()
        page = await sign_in(context, server.base, WRITE_TOKEN)
        cookie = session_cookie(await context.cookies())
        replay = {"Cookie": f"st_session={cookie['value']}"}
        async with httpx.AsyncClient(base_url=server.base) as client:
            assert (await client.get("/v1/session", headers=replay)).status_code == 200
            await expect(page.locator("#sign-out")).to_be_visible()
            await page.click("#sign-out")
            await expect(page.locator("#signin")).to_be_visible(timeout=5_000)
            await expect(page.locator("#app")).to_be_hidden()
            assert (await client.get("/v1/session", headers=replay)).status_code == 401
            lookup = await client.get(f"/v1/messages/{BOUNCED}", headers=replay)
            assert lookup.status_code == 401
        await browser.close()


async def test_a_read_session_sees_no_control_that_changes_state() -> None:
    async with serving(settings()) as server, async_playwright() as p:
        await seed(server)
        browser = await launch(p)
        # A write session has the controls (so their absence below means something).
        writer = await sign_in(await browser.new_context(), server.base, WRITE_TOKEN)
        await writer.goto(f"{server.base}/?recipient={ADDRESS}")
        await expect(writer.locator("#recipient-summary")).to_be_visible(timeout=5_000)
        await expect(writer.locator("#erase-recipient")).to_be_visible()
        await expect(writer.locator("#recipient-suppressed .remove-suppression")).to_be_visible()
        await writer.goto(f"{server.base}/?message={BOUNCED}")
        await expect(writer.locator(".suppression .remove-suppression")).to_be_visible(
            timeout=5_000
        )
        # A read session: everything to read, nothing to change.
        context = await browser.new_context()
        reader = await sign_in(context, server.base, READ_TOKEN)
        await expect(reader.locator("#access")).to_have_text("read-only · support")
        await reader.goto(f"{server.base}/?recipient={ADDRESS}")
        await expect(reader.locator("#recipient-summary")).to_contain_text(
            "1 message(s)", timeout=5_000
        )
        await expect(reader.locator("#recipient-suppressed")).to_contain_text(
            "Unsafe to mail again"
        )
        assert await reader.locator("#erase-recipient").count() == 0
        assert await reader.locator("button.writes, .writes button").count() == 0
        await reader.goto(f"{server.base}/?message={BOUNCED}")
        await expect(reader.locator(".suppression")).to_contain_text(
            "Suppressed (bounce)", timeout=5_000
        )
        assert await reader.locator(".remove-suppression").count() == 0
        # And the API refuses the read session what the page does not offer it.
        replay = {"Cookie": f"st_session={session_cookie(await context.cookies())['value']}"}
        async with httpx.AsyncClient(base_url=server.base, headers=replay) as client:
            assert (await client.delete(f"/v1/recipients/{ADDRESS}")).status_code == 403
            assert (await client.delete(f"/v1/suppressions/{ADDRESS}")).status_code == 403
            assert (await client.get(f"/v1/messages/{BOUNCED}")).status_code == 200
        # The writer erases the recipient: the page follows the background job.
        writer.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await writer.goto(f"{server.base}/?recipient={ADDRESS}")
        await writer.locator("#erase-recipient").click()
        await expect(writer.locator(".danger .muted")).to_have_text(
            "Erased from 1 message(s).", timeout=10_000
        )
        await browser.close()


async def test_a_message_opens_in_place_with_a_way_back_at_1400_and_400_px() -> None:
    """The history API: a click pushes the message's address, back restores the live
    page, forward and reload bring the message again. Screenshots for the record."""
    async with serving(settings()) as server, async_playwright() as p:
        await seed(server)
        browser = await launch(p)
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await sign_in(context, server.base, WRITE_TOKEN)
        await page.fill("#lookup-id", BOUNCED)
        await page.click("#lookup-form button")
        await expect(page.locator(".diagnosis-summary")).to_be_visible(timeout=5_000)
        assert page.url == f"{server.base}/?message={BOUNCED}"
        await expect(page.locator("#dashboard")).to_be_hidden()
        await page.click("#back")
        await expect(page.locator("#dashboard")).to_be_visible()
        await expect(page.locator("#lookup-panel")).to_be_hidden()
        assert page.url == server.base + "/"
        await page.go_forward()
        await expect(page.locator("#lookup-title")).to_have_text(BOUNCED)
        await page.reload()
        await expect(page.locator(".diagnosis-summary")).to_be_visible(timeout=5_000)
        # A message id elsewhere on the message page (the suppression's) opens in place.
        await page.locator(".recipient-head a").click()
        await expect(page.locator("#recipient-summary")).to_be_visible(timeout=5_000)
        await page.go_back()
        await expect(page.locator(".diagnosis-summary")).to_be_visible(timeout=5_000)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "message-page-1400.png"), full_page=True)
        await page.set_viewport_size({"width": 400, "height": 860})
        await expect(page.locator(".diagnosis-summary")).to_be_in_viewport()
        # Nothing wider than a narrow screen: no sideways scrolling to read it.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, width
        await page.screenshot(path=str(ARTIFACTS / "message-page-400.png"), full_page=True)
        await browser.close()


def test_the_page_keeps_no_token_in_its_scripts() -> None:
    """No storage API and no token parameter on the page's own calls."""
    static = Path(__file__).resolve().parents[2] / "api" / "static"
    for script in static.glob("*.js"):
        source = script.read_text()
        for forbidden in (
            "localStorage",
            "sessionStorage",
            "Authorization",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ):
            assert forbidden not in source, f"{script.name}: {forbidden}"


async def test_the_waterfall_steps_are_timed_from_send_and_from_the_step_before() -> None:
    """recipientSteps (api/static/waterfall.js), a pure function, run in the page."""
    async with serving(Settings(_env_file=None)) as server, async_playwright() as p:
        browser = await launch(p)
        page = await browser.new_page()
        await page.goto(server.base + "/")
        steps = await page.evaluate(
            """async () => {
              const { recipientSteps } = await import('/static/waterfall.js');
              const message = { sent_at: '2026-01-01T00:00:00.000Z' };
              const at = (s) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
              const pick = (steps) => steps.map((s) => [s.kind, s.took, s.fromSend, s.stat]);
              return {
                // Events arrive in any order; a delivery after two delays.
                delivered: pick(recipientSteps(message, { status: 'delivered',
                  delays: [{ at: at(30), delay_type: 'MailboxFull' }, { at: at(10) }],
                  delivered_at: at(45) }, 0)),
                // Still waiting: an open-ended last step up to now.
                waiting: pick(recipientSteps(message, { status: 'sent', delays: [] },
                  Date.parse(at(50)))),
                // A complaint after its delivery; an auto-reply bounce as a note.
                complained: pick(recipientSteps(message, { status: 'complained', delays: [],
                  delivered_at: at(2), complaint: { at: at(62) },
                  notes: [{ kind: 'auto_reply', bounce: { at: at(3) } }] }, 0)),
              };
            }"""
        )
        assert steps["delivered"] == [
            ["send", 0, 0, None],
            ["delay", 10_000, 10_000, "send_to_first_delay"],
            ["delay", 20_000, 30_000, None],
            ["delivery", 15_000, 45_000, "send_to_delivery"],
        ]
        assert steps["waiting"] == [["send", 0, 0, None], ["waiting", 50_000, 50_000, None]]
        assert steps["complained"] == [
            ["send", 0, 0, None],
            ["delivery", 2_000, 2_000, "send_to_delivery"],
            ["auto_reply", 1_000, 3_000, None],
            ["complaint", 59_000, 62_000, "send_to_complaint"],
        ]
        await browser.close()
