"""The status page in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from service.runtime import Runtime
from service.settings import Settings
from service.state import STATUSES
from service.traffic.simulator import TROUBLED_DAYS, run_simulator, seed_history
from tests.support import ses
from tests.support.serving import serving

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
PLACEHOLDER = "\u2013"  # what a counter shows before the first stats frame (an en dash)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# As the machine's own probe runs it: no sandbox as root, no background networking
# (this machine is offline, and Chromium's own connections would be refused).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def with_simulator(runtime: Runtime) -> None:
    runtime.spawn("simulator", run_simulator(runtime.pipeline, messages_per_s=40, seed=4))


async def counter(page, name: str) -> int:
    value = await page.inner_text(f"#count-{name}")
    return int(value.replace(",", "")) if value.strip(PLACEHOLDER) else 0


async def test_the_page_is_live_and_looks_messages_up(tmp_path: Path) -> None:
    assert HAVE_CHROMIUM, "install Debian's chromium (bash .ci/run does)"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "timing: {group_wait_s: 0, evaluate_every_s: 0.5}\n"
        "rules:\n  - {name: rejects, kind: status_count, status: rejected}\n"
    )
    async with (
        serving(Settings(_env_file=None, alert_rules=rules), on_start=with_simulator) as server,
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(server.base + "/")
        await expect(page.locator("#connection")).to_have_text("live", timeout=5_000)
        await expect(page.locator("#feed tbody tr").first).to_be_visible(timeout=5_000)
        await page.wait_for_function(
            f"document.getElementById('count-sent').textContent !== '{PLACEHOLDER}'"
        )
        sent_before = await counter(page, "sent")
        rows_before = await page.locator("#feed tbody tr").count()
        first_before = await page.inner_text("#feed tbody tr:first-child")
        # Counters and the feed move within 2 s.
        sent_now = "Number(document.getElementById('count-sent').textContent.replace(/,/g, ''))"
        await page.wait_for_function(f"{sent_now} > {sent_before}", timeout=2_000)
        await page.wait_for_function(
            "([rows, first]) => document.querySelectorAll('#feed tbody tr').length !== rows"
            " || document.querySelector('#feed tbody tr').innerText !== first",
            arg=[rows_before, first_before],
            timeout=2_000,
        )
        # The latency chart (axes drawn on its canvas): a legend of three lines.
        await expect(page.locator("#latency-chart canvas")).to_have_count(1, timeout=3_000)
        labels = await page.locator("#latency-chart .u-legend .u-label").all_inner_texts()
        assert labels == ["time (UTC)", "p50", "p90", "p99"], labels
        # A message sent an hour ago with no outcome is listed as overdue, by the server.
        stale = ses.send("0100018b-stale-0000", ["late@x.com"], int(time.time() * 1000) - 3_600_000)
        async with httpx.AsyncClient(base_url=server.base) as client:
            assert (await client.post("/v1/events", content=ses.dumps(stale))).status_code == 202
        waiting = page.locator("#waiting li", has_text="0100018b-stale-0000")
        await expect(waiting).to_contain_text("overdue", timeout=8_000)
        await expect(waiting).to_contain_text("late@x.com")
        # An alert fires (a Reject) and the page lists it, with an example to look up. Dated
        # now: live windows count by event time, so a 2023 Reject would never fire.
        reject = ses.reject("0100018b-rejected-000", ["r@x.com"], int(time.time() * 1000))
        async with httpx.AsyncClient(base_url=server.base) as client:
            assert (await client.post("/v1/events", content=ses.dumps(reject))).status_code == 202
        firing = page.locator("#alerts li", has_text="rejected")
        await expect(firing).to_contain_text("critical", timeout=8_000)
        await expect(firing.locator("a")).to_have_attribute("data-message-id", re.compile(".+"))
        # Look a message up, by the box, with an id from the feed.
        message_id = await page.locator("#feed td.mid a").first.get_attribute("data-message-id")
        await page.fill("#lookup-id", message_id)
        await page.click("#lookup-form button")
        status = page.locator("#lookup-status strong")
        await expect(status).to_be_visible(timeout=5_000)
        assert await status.inner_text() in STATUSES
        # The message page: a card per recipient with its steps, and the stored events.
        await expect(page.locator("#lookup-result .recipient .waterfall").first).to_be_visible()
        await expect(page.locator("#message-events")).to_be_attached()
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
        await page.fill("#lookup-id", "no-such-message")
        await page.click("#lookup-form button")
        await expect(page.locator("#lookup-result")).to_contain_text("Unknown message id")
        await browser.close()


def with_history_and_simulator(runtime: Runtime) -> None:
    async def simulate() -> None:
        await seed_history(runtime.pipeline, seed=5)
        await run_simulator(runtime.pipeline, messages_per_s=40, seed=5)

    runtime.spawn("simulator", simulate())


async def test_the_page_breaks_down_by_any_dimension_and_draws_ninety_days() -> None:
    """#14: the breakdown selector and the 90-day trend, as the demo starts them."""
    assert HAVE_CHROMIUM, "install Debian's chromium (bash .ci/run does)"
    settings = Settings(_env_file=None, tag_dimensions="campaign")
    async with (
        serving(settings, on_start=with_history_and_simulator) as server,
        async_playwright() as p,
    ):
        # A sender-chosen value is shown as text, never as markup.
        hostile = ses.send("0100018b-hostile", ["a@x.com"], int(time.time() * 1000))
        hostile["mail"]["tags"]["ses:configuration-set"] = ["<img src=x onerror=alert(1)>"]
        async with httpx.AsyncClient(base_url=server.base) as client:
            assert (await client.post("/v1/events", content=ses.dumps(hostile))).status_code == 202
            # The demo's history is seeded before the live traffic starts.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                days = (await client.get("/v1/history", params={"step": "day"})).json()["points"]
                if len(days) >= 30:
                    break
                await asyncio.sleep(0.2)
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1400})
        await page.goto(server.base + "/")
        selector = page.locator("#breakdown-by")
        await expect(selector.locator("option[value='tag:campaign']")).to_have_count(
            1, timeout=5_000
        )
        options = await selector.locator("option").all_inner_texts()
        assert options == ["configuration_set", "identity", "tag:campaign", "domain", "provider"]
        await expect(page.locator("#breakdown tbody tr").first).to_be_visible(timeout=5_000)
        await selector.select_option("configuration_set")
        await expect(page.locator("#breakdown-key")).to_have_text("configuration_set")
        keys = page.locator("#breakdown tbody td:first-child")
        await expect(keys.filter(has_text="transactional")).to_have_count(1, timeout=5_000)
        await expect(keys.filter(has_text="<img src=x onerror=alert(1)>")).to_have_count(1)
        assert await page.locator("#breakdown img").count() == 0
        await selector.select_option("provider")
        await expect(keys.filter(has_text="microsoft")).to_have_count(1, timeout=5_000)
        await selector.select_option("tag:campaign")
        await expect(keys.filter(has_text="(none)")).to_have_count(1, timeout=5_000)
        # Ninety days: the seeded history's 89 past days, and today's live traffic.
        await expect(page.locator("#trend-summary")).to_contain_text(
            "days with mail", timeout=10_000
        )
        summary = await page.inner_text("#trend-summary")
        assert int(summary.split()[0]) >= 89, summary
        # Each chart names its lines, the SES review threshold among them, and says a
        # day's values under the cursor; a click on a day opens its messages.
        legend = page.locator("#trend-bounce .u-legend .u-label")
        assert await legend.all_inner_texts() == ["day (UTC)", "bounce rate", "SES review 5.0%"]
        labels = await page.locator("#trend-latency .u-legend .u-label").all_inner_texts()
        assert labels == ["day (UTC)", "p50", "p90", "p99"], labels
        over = page.locator("#trend-bounce .u-over")
        box = await over.bounding_box()
        troubled = 89 - max(TROUBLED_DAYS, key=TROUBLED_DAYS.get)  # the worst day's place
        await page.mouse.move(box["x"] + box["width"] * troubled / 89, box["y"] + 10)
        values = await page.locator("#trend-bounce .u-legend .u-value").all_inner_texts()
        day, rate, review = values
        assert review == "5.0%" and rate.endswith("%") and float(rate[:-1]) > 5, values
        assert len(day) == 10, values  # the day's date
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "status-page-trend.png"), full_page=True)
        await page.mouse.click(box["x"] + box["width"] * troubled / 89, box["y"] + 10)
        await expect(page).to_have_url(re.compile(r"/\?search=1&since=.*&until="))
        await expect(page.locator("#search-since")).to_have_value(re.compile(f"^{day}T00:00"))
        assert max(TROUBLED_DAYS.values()) > 0.5
        await browser.close()


async def test_the_page_says_what_each_source_is_doing() -> None:
    """#18: a consumer that cannot reach its queue shows as retrying, in words."""
    from tests.support.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    settings = Settings(
        _env_file=None,
        sqs_queue_urls=f"{dead}/123456789012/ses-events",
        aws_endpoint_url=dead,
    )
    async with serving(settings) as server, async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page()
        await page.goto(server.base + "/")
        await expect(page.locator("#source-sqs")).to_contain_text("retrying", timeout=15_000)
        await browser.close()


async def test_the_page_says_plainly_when_a_source_is_catching_up() -> None:
    """#17: a consumer reading hour-old events is named, and the notice goes once it
    has caught up."""
    from consumers.base import Source
    from service.lag import EventLag

    clock = ses.clock_from(ses.SENT_AT + 3_000_000)

    class Behind(Source):
        name = "kafka"

        def __init__(self) -> None:
            super().__init__()
            self.connected, self.state = True, "consuming"
            self.event_lag = EventLag(clock)
            self.event_lag.read("ses-events:0", ses.SENT_AT, behind=True)

        async def run(self) -> None:
            await self._stopping.wait()

        def status(self) -> dict:
            return {**super().status(), "event_lag_s": self.event_lag.seconds()}

    behind = Behind()
    async with (
        serving(Settings(_env_file=None), lambda rt: rt.sources.append(behind), clock) as server,
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page()
        await page.goto(server.base + "/")
        notice = page.locator("#catch-up-notice")
        await expect(notice).to_contain_text(
            "Catching up: kafka ses-events:0 is reading events 50 min old", timeout=15_000
        )
        await expect(notice).to_contain_text("incomplete")
        await expect(page.locator("#source-kafka")).to_contain_text("reading events 50 min old")
        behind.event_lag.read("ses-events:0", clock() - 3_000, behind=False)
        await expect(notice).to_be_hidden(timeout=15_000)
        await browser.close()


async def test_the_page_has_a_line_per_forwarding_subscription(tmp_path: Path) -> None:
    """#15: what each subscription sent, what waits, and since when."""
    from tests.support.receiver import Answer, Receiver

    assert HAVE_CHROMIUM, "install Debian's chromium (bash .ci/run does)"
    async with Receiver() as receiver:
        receiver.script = [Answer(status=503)] * 1_000  # a receiver that is down
        forward_file = tmp_path / "forward.yaml"
        forward_file.write_text(
            "subscriptions:\n"
            f"  - {{name: crm, url: '{receiver.base}/hook', secret: a-long-secret-value-1}}\n"
        )
        settings = Settings(_env_file=None, forward_file=forward_file)
        async with serving(settings) as server, async_playwright() as p:
            now = int(time.time() * 1000)
            async with httpx.AsyncClient(base_url=server.base) as client:
                body = ses.dumps(ses.send("0100018b-fwd-page", ["a@x.com"], now))
                assert (await client.post("/v1/events", content=body)).status_code == 202
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = await browser.new_page()
            await page.goto(server.base + "/")
            line = page.locator("#forward-crm")
            await expect(line).to_contain_text("forward crm", timeout=8_000)
            await expect(line).to_contain_text("failed posts", timeout=8_000)
            await expect(line).to_contain_text("1 waiting")
            await browser.close()


async def test_the_lookup_box_shows_a_recipient_profile() -> None:
    """#15: support staff type an address and see what happened to their mail."""
    assert HAVE_CHROMIUM, "install Debian's chromium (bash .ci/run does)"
    now = int(time.time() * 1000)
    async with serving(Settings(_env_file=None)) as server, async_playwright() as p:
        async with httpx.AsyncClient(base_url=server.base) as client:
            body = ses.dumps(
                ses.send("0100018b-prof-a", ["who@x.com"], now - 60_000),
                ses.delivery("0100018b-prof-a", ["who@x.com"], now - 59_000, now - 60_000),
                ses.send("0100018b-prof-b", ["who@x.com"], now - 30_000),
                ses.bounce("0100018b-prof-b", ["who@x.com"], now - 29_000, sent_at=now - 30_000),
            )
            assert (await client.post("/v1/events", content=body)).status_code == 202
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page()
        await page.goto(server.base + "/")
        await page.fill("#lookup-id", "Who@X.com")
        await page.click("#lookup-form button")
        await expect(page.locator("#recipient-summary")).to_contain_text("2 message(s)")
        await expect(page.locator("#recipient-summary strong")).to_have_text("bounced")
        await expect(page.locator("#recipient-suppressed")).to_contain_text("Unsafe to mail again")
        # A message of the profile opens on click.
        await page.locator("#lookup-result a", has_text="0100018b-prof-a").click()
        await expect(page.locator("#lookup-title")).to_have_text("0100018b-prof-a")
        await browser.close()


async def test_live_rows_are_in_event_time_order_and_counters_say_their_window() -> None:
    """#27: a late event (older than what came before it) goes below the newer rows,
    not on top; the counters say which window they count."""
    async with serving(Settings(_env_file=None)) as server, async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(server.base + "/")
        await expect(page.locator("#connection")).to_have_text("live", timeout=5_000)
        await expect(page.locator(".counters-window")).to_have_text(
            "Recipients by status, last 5 minutes (by event time)"
        )
        now = int(time.time() * 1000)
        newer = [ses.send("0100018b-order-new", ["a@x.com"], now - 1_000),
                 ses.delivery("0100018b-order-new", ["a@x.com"], now, now - 1_000)]  # fmt: skip
        late = [ses.send("0100018b-order-late", ["b@x.com"], now - 60_000)]
        async with httpx.AsyncClient(base_url=server.base) as client:
            for batch in (newer, late):
                assert (await client.post("/v1/events", content=ses.dumps(*batch))).status_code
                rows = page.locator("#feed tbody tr")
                await expect(rows).to_have_count(3 if batch is late else 2, timeout=5_000)
        times = await page.locator("#feed tbody tr td:first-child").all_inner_texts()
        assert times == sorted(times, reverse=True), times
        links = await page.locator("#feed tbody tr td.mid").all_inner_texts()
        assert links[-1].startswith("0100018b-order-late"), links
        await browser.close()


async def test_a_rate_bar_is_never_green_past_a_threshold_or_while_its_alert_fires(
    tmp_path: Path,
) -> None:
    """#27: green below, amber from 2% bounces (or while a rate alert fires, whatever
    its threshold), red from SES's review threshold (before: green up to 5%)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "timing:\n  evaluate_every_s: 0.5\n  group_wait_s: 0\nrules:\n"
        "  - name: bounces\n    kind: bounce_rate\n    window_s: 3600\n"
        "    warn: 0.005\n    min_sent: 10\n"
    )
    settings = Settings(_env_file=None, alert_rules=rules)
    async with serving(settings) as server, async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(server.base + "/")
        await expect(page.locator("#connection")).to_have_text("live", timeout=5_000)
        now = int(time.time() * 1000)
        sent = [ses.send(f"0100018b-bar-{n:03}", [f"r{n}@x.com"], now - 5_000) for n in range(100)]
        bounced = ses.bounce(
            "0100018b-bar-000", ["r0@x.com"], now, "Permanent", sent_at=now - 5_000
        )
        async with httpx.AsyncClient(base_url=server.base) as client:
            assert (await client.post("/v1/events", content=ses.dumps(*sent))).status_code == 202
            await expect(page.locator("#bounce-bar")).to_have_class("", timeout=5_000)
            # 1%: under 2%, but past the rule's 0.5%: its alert fires, so amber.
            assert (await client.post("/v1/events", content=ses.dumps(bounced))).status_code == 202
            await expect(page.locator("#bounce-rate")).to_have_text("1.00%", timeout=5_000)
            await expect(page.locator("#alerts")).to_contain_text("Bounce rate", timeout=15_000)
            await expect(page.locator("#bounce-bar")).to_have_class("near", timeout=15_000)
            # 6%: past SES's review threshold: red.
            more = [
                ses.bounce(f"0100018b-bar-{n:03}", [f"r{n}@x.com"], now, "Permanent",
                           sent_at=now - 5_000)
                for n in range(1, 6)
            ]  # fmt: skip
            assert (await client.post("/v1/events", content=ses.dumps(*more))).status_code == 202
            await expect(page.locator("#bounce-bar")).to_have_class("over", timeout=5_000)
        await browser.close()
