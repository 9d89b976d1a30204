#!/usr/bin/env python3
"""The status page at the admin port's `/`, in real headless Chromium (Debian's `chromium`,
driven over the DevTools protocol): it loads with no external assets, lists the sparks, shows
wake buttons once a token is entered, and its wake button wakes a sleeping spark.
"""

import json
import os
import sys
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


@unittest.skipUnless(cdp.chromium_path(), "chromium is not installed")
class StatusPage(GatewayTestCase):

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
