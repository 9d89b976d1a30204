"""A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4, messages
separated by NUL bytes), so a test can drive headless Chromium with the standard library only."""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time


def chromium_path():
    # Debian's /usr/bin/chromium is a shell launcher; the binary itself keeps fds 3 and 4 simple.
    if os.access("/usr/lib/chromium/chromium", os.X_OK):
        return "/usr/lib/chromium/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, env=None, timeout=30.0):
        binary = chromium_path()
        if not binary:
            raise RuntimeError("chromium is not installed")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="cdp-profile-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def plumb():  # in the child: the pipes become fds 3 (commands) and 4 (answers)
            # Park both high first: either may itself be fd 3 or 4.
            os.dup2(to_chrome_r, 200)
            os.dup2(from_chrome_w, 201)
            os.dup2(200, 3)
            os.dup2(201, 4)
            os.close(200)
            os.close(201)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--user-data-dir=" + self.profile, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=plumb, close_fds=False, env=env, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._answers = {}
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._answers["closed"] = True
                    self._lock.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                message, buf = buf.split(b"\0", 1)
                m = json.loads(message)
                if "id" in m:
                    with self._lock:
                        self._answers[m["id"]] = m
                        self._lock.notify_all()

    def call(self, method, session=None, **params):
        with self._lock:
            self._next_id += 1
            mid = self._next_id
        message = {"id": mid, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while mid not in self._answers:
                if self._answers.get("closed"):
                    raise RuntimeError("chromium exited")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer to %s within %gs" % (method, self.timeout))
                self._lock.wait(left)
            answer = self._answers.pop(mid)
        if "error" in answer:
            raise RuntimeError("%s: %s" % (method, answer["error"]))
        return answer.get("result", {})

    # On the page the browser was attached to.
    def navigate(self, url):
        return self.call("Page.navigate", session=self.session, url=url)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", session=self.session, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError("page script failed: %s" % result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path):
        import base64
        data = self.call("Page.captureScreenshot", session=self.session, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
