#!/usr/bin/env python3
"""The status page at the admin port's `/`, in real headless Chromium (Debian's `chromium`,
driven over the DevTools protocol): it loads with no external assets, lists the sparks, shows
wake buttons once a token is entered, and its wake button wakes a sleeping spark. Its last-24-
hours section draws each spark's timeline (awake and asleep bars, sessions, wake markers) where
the history puts them, and the fleet's share of spark-hours slept.

SPARK_GATEWAY_SCREENSHOT=PATH keeps the timeline test's screenshot there (docs/images/status-page.png
is made that way).
"""

import datetime
import json
import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402
import harness  # noqa: E402
from harness import GatewayTestCase, wait_until  # noqa: E402

TOKEN = "page-e2e-" + "p" * 24


def open_page(browser, url):
    """Navigates and waits until the page's own script has run (navigate returns earlier)."""
    browser.navigate(url)
    # The script fills "updated" after its first refresh: by then its listeners are attached.
    wait_until(lambda: browser.evaluate('location.href === %s && !!document.getElementById("updated")'
                                        ' && document.getElementById("updated").textContent !== ""'
                                        % json.dumps(url)), 20, "the status page to load")


def type_token(browser, token):
    """Types `token` into the page's token field, as a user would (an input event)."""
    browser.evaluate('(() => { const t = document.getElementById("token"); t.value = %s;'
                     ' t.dispatchEvent(new Event("input")); })()' % json.dumps(token))


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


HOUR = 3600.0


def seeded_day(now):
    """A day as the state file keeps it (docs/operations.md, "History"): asleep, woken for a
    connection, in use, asleep, woken by an operator, asleep again. Times are hours ago."""
    def interval(a, b, state):
        return {"from": rfc3339(now - a * HOUR), "to": rfc3339(now - b * HOUR), "state": state}
    return {
        "intervals": [interval(20, 9, "asleep"), interval(9, 6, "awake"), interval(6, 3, "asleep"),
                      interval(3, 2, "awake")],
        "current": {"since": rfc3339(now - 2 * HOUR), "state": "asleep"},
        "wakes": [{"at": rfc3339(now - 9 * HOUR), "cause": "a connection from 100.101.102.103"},
                  {"at": rfc3339(now - 3 * HOUR), "cause": "an operator (admin API)"}],
        "in_use": [{"from": rfc3339(now - 8.5 * HOUR), "to": rfc3339(now - 6.5 * HOUR)}],
    }


@unittest.skipUnless(cdp.chromium_path(), "chromium is not installed")
class StatusPage(GatewayTestCase):

    def test_timeline_draws_the_day_where_the_history_puts_it(self):
        day_spark = self.add_spark("brave-dolphin")
        self.add_spark("calm-otter")
        self.enable_admin(token=TOKEN)
        self.write_config()
        # A day of history in the state file, written up to a minute ago (the gateway "stopped"
        # then): the page must draw it as the restarted gateway loaded it.
        now = time.time()
        os.makedirs(self.state_dir, exist_ok=True)
        with open(os.path.join(self.state_dir, "activity.json"), "w") as f:
            json.dump({"version": 1, "saved_at": rfc3339(now - 60), "sparks": {
                day_spark.name: {"last_activity": rfc3339(now - 2 * HOUR), "keep_awake_until": None,
                                 "history": seeded_day(now)}}}, f)
        self.start_gateway()
        browser = cdp.Browser(env=self.child_env())
        self.addCleanup(browser.close)
        browser.call("Emulation.setDeviceMetricsOverride", session=browser.session, width=1280, height=760,
                     deviceScaleFactor=1, mobile=False)
        open_page(browser, self.admin["url"] + "/")
        svg = 'document.querySelector("svg.timeline[data-spark=\\"%s\\"]")'
        wait_until(lambda: browser.evaluate((svg % day_spark.name) + " !== null && "
                                            + (svg % "calm-otter") + " !== null"), 20,
                   "a timeline per spark")

        # Where each element is drawn, as a share of the timeline's width (0: 24 h ago, 1: now).
        placed = browser.evaluate("""(() => {
          const svg = %s, box = svg.getBoundingClientRect();
          const at = el => { const b = el.getBoundingClientRect();
                             return { left: (b.left - box.left) / box.width, right: (b.right - box.left) / box.width,
                                      center: (b.left + b.width / 2 - box.left) / box.width,
                                      top: b.top - box.top, bottom: b.bottom - box.top, height: box.height }; };
          const all = sel => [...svg.querySelectorAll(sel)].map(e => Object.assign(at(e), e.dataset));
          return { awake: all("rect.awake"), asleep: all("rect.asleep"), unknown: all("rect.unknown"),
                   session: all("rect.session"), wake: all("path.wake"), width: box.width };
        })()""" % (svg % day_spark.name))
        checked_at = time.time()
        self.assertGreater(placed["width"], 500, "the timeline has room to be read")

        def share(hours_ago):  # where a moment belongs on the timeline, as the test sees the day
            return 1 - (checked_at - (now - hours_ago * HOUR)) / (24 * HOUR)
        tolerance = 2.0 / placed["width"]  # two pixels (and the seconds the test took)

        self.assertEqual([(r["from"], r["to"]) for r in placed["awake"]],
                         [(rfc3339(now - 9 * HOUR), rfc3339(now - 6 * HOUR)),
                          (rfc3339(now - 3 * HOUR), rfc3339(now - 2 * HOUR))])
        for rect, (a, b) in zip(placed["awake"], [(9, 6), (3, 2)]):
            self.assertAlmostEqual(rect["left"], share(a), delta=tolerance)
            self.assertAlmostEqual(rect["right"], share(b), delta=tolerance)
        # Asleep: before, between, after (closed at the minute-old saved_at), and since the restart.
        asleep = [(r["left"], r["right"]) for r in placed["asleep"]]
        self.assertEqual(len(asleep), 4, placed["asleep"])
        self.assertAlmostEqual(asleep[0][0], share(20), delta=tolerance)
        self.assertAlmostEqual(asleep[0][1], placed["awake"][0]["left"], delta=tolerance)
        self.assertAlmostEqual(asleep[1][0], placed["awake"][0]["right"], delta=tolerance)
        self.assertAlmostEqual(asleep[3][1], 1.0, delta=tolerance, msg="asleep up to now")
        # Unknown: the 4 hours before the history begins, and the minute the gateway was down.
        self.assertAlmostEqual(placed["unknown"][0]["left"], 0.0, delta=tolerance)
        self.assertAlmostEqual(placed["unknown"][0]["right"], share(20), delta=tolerance)
        self.assertEqual(len(placed["unknown"]), 2)
        self.assertEqual(placed["unknown"][1]["from"], rfc3339(now - 60))
        # The session lies inside the first awake bar, along its bottom; the wakes mark the
        # start of each awake bar, above it.
        (session,) = placed["session"]
        self.assertAlmostEqual(session["left"], share(8.5), delta=tolerance)
        self.assertAlmostEqual(session["right"], share(6.5), delta=tolerance)
        self.assertGreater(session["top"], placed["awake"][0]["top"])
        self.assertEqual(len(placed["wake"]), 2)
        for marker, bar in zip(placed["wake"], placed["awake"]):
            self.assertAlmostEqual(marker["center"], bar["left"], delta=tolerance)
            self.assertLessEqual(marker["top"], bar["top"])
        # Tooltips say what each mark is.
        titles = browser.evaluate('[...(%s).querySelectorAll("path.wake title")].map(t => t.textContent)'
                                  % (svg % day_spark.name))
        self.assertIn("for a connection from 100.101.102.103", titles[0])

        # The fleet's share of spark-hours slept, as the API computes it, drawn to scale.
        status, history = self.api("GET", "/api/v1/history")
        self.assertEqual(status, 200, history)
        for window in ("24h", "7d"):
            bar = browser.evaluate("""(() => { const d = document.getElementById("fleet-%s");
              const slept = d.querySelector("rect.slept");
              return { share: parseFloat(d.dataset.share), width: parseFloat(slept.getAttribute("width")),
                       text: d.innerText }; })()""" % window)
            api_share = history["totals"][window]["slept_share"]
            self.assertAlmostEqual(bar["share"], api_share, delta=0.01)
            self.assertAlmostEqual(bar["width"], bar["share"] * 100, places=6)
            self.assertIn("slept %d%%" % round(bar["share"] * 100), bar["text"])
        # brave-dolphin: 4 h awake; 11 + 3 h asleep, and asleep since the restart (both sparks).
        self.assertAlmostEqual(history["totals"]["24h"]["awake_seconds"], 4 * HOUR, delta=1)

        # Self-contained: every resource the page loaded came from the gateway itself.
        foreign = browser.evaluate('performance.getEntriesByType("resource")'
                                   '.filter(e => !e.name.startsWith(location.origin)).length')
        self.assertEqual(foreign, 0)
        shot = os.path.join(self.tmpdir, "status-timeline.png")
        browser.screenshot(shot)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        if os.environ.get("SPARK_GATEWAY_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["SPARK_GATEWAY_SCREENSHOT"])

    def test_page_lists_sparks_and_its_wake_button_wakes_one(self):
        sleepy = self.add_spark("sleepy-sloth")
        self.add_spark("other-otter")
        self.enable_admin(token=TOKEN)
        self.write_config()
        self.start_gateway()
        browser = cdp.Browser(env=self.child_env())
        self.addCleanup(browser.close)
        open_page(browser, self.admin["url"] + "/")
        rows = 'document.querySelectorAll("#sparks tr[data-spark]")'
        wait_until(lambda: browser.evaluate(rows + ".length") == 2, 20, "the page to list both sparks")
        text = browser.evaluate('document.getElementById("sparks").innerText')
        self.assertIn("sleepy-sloth", text)
        self.assertIn("sleeping", text)
        # Self-contained: every resource the page loaded came from the gateway itself.
        foreign = browser.evaluate('performance.getEntriesByType("resource")'
                                   '.filter(e => !e.name.startsWith(location.origin)).length')
        self.assertEqual(foreign, 0)
        # No buttons without a token; with one, wake/sleep buttons appear.
        self.assertEqual(browser.evaluate('document.querySelectorAll("button.wake").length'), 0)
        type_token(browser, TOKEN)
        button = 'document.querySelector("tr[data-spark=\\"sleepy-sloth\\"] button.wake")'
        wait_until(lambda: browser.evaluate(button + " !== null"), 10, "the wake button")
        browser.evaluate(button + ".click()")
        sleepy.wait_sshd_running(20, "the button's wake to start the spark")
        wait_until(lambda: "running" in browser.evaluate(
            'document.querySelector("tr[data-spark=\\"sleepy-sloth\\"]").innerText'), 15,
            "the page to show it running (it refreshes itself)")
        self.assertEqual(sleepy.starts(), 1)
        shot = os.path.join(self.tmpdir, "status.png")
        browser.screenshot(shot)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_a_wrong_token_shows_the_error_and_wakes_nothing(self):
        spark = self.add_spark("guarded-goat")
        self.enable_admin(token=TOKEN)
        self.write_config()
        self.start_gateway()
        browser = cdp.Browser(env=self.child_env())
        self.addCleanup(browser.close)
        open_page(browser, self.admin["url"] + "/")
        type_token(browser, "wrong")
        button = 'document.querySelector("tr[data-spark=\\"guarded-goat\\"] button.wake")'
        wait_until(lambda: browser.evaluate(button + " !== null"), 20, "the wake button")
        browser.evaluate(button + ".click()")
        wait_until(lambda: "Bearer" in (browser.evaluate('document.getElementById("message").innerText') or ""), 10,
                   "the page to show the API's error")
        self.assertEqual(spark.starts(), 0)


if __name__ == "__main__":
    harness.main()
