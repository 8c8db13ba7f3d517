"""The web console in a real browser: Debian's headless Chromium driven through chromedriver.

Real `denokv serve` processes on 127.0.0.1, values written and read back by real
Deno programs (tests/deno/console_*.ts), the page used as a person would (typing,
clicking, two tabs, a file download and upload). Each test saves a screenshot
under .cache/console-screenshots/.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.deno import run_deno
from tests.support.paths import ROOT
from tests.support.processes import ServerFactory, ServerProcess
from tests.support.s3 import s3_env

pytestmark = [pytest.mark.browser, pytest.mark.deno]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = ROOT / ".cache" / "console-screenshots"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,800", "--disable-dev-shm-usage",
)  # fmt: skip
CONFLICT = "The entry changed since the page showed it; nothing was written."


class Page:
    """The console in the browser, with waits that fail with what was on the page."""

    def __init__(self, driver: Any, downloads: Path) -> None:
        self.driver = driver
        self.downloads = downloads

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                self.shot(f"failed-{what.replace(' ', '-')}")
                body = self.js("return document.body.innerText")[:2000]
                raise AssertionError(f"{what}: not within {timeout} s; the page shows:\n{body}")
            time.sleep(0.05)

    def text(self, selector: str) -> str:
        script = "const n = document.querySelector(arguments[0]); return n ? n.textContent : null"
        return self.js(script, selector) or ""

    def wait_text(self, selector: str, expected: str, timeout: float = 15) -> None:
        self.wait(
            f"{selector} shows {expected!r}", lambda: expected in self.text(selector), timeout
        )

    def find(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        found = lambda: self.driver.find_elements(By.CSS_SELECTOR, selector)  # noqa: E731
        return self.wait(f"{selector} present", found)[0]

    def type_into(self, selector: str, text: str) -> None:
        field = self.find(selector)
        field.clear()
        field.send_keys(text)

    def click(self, selector: str) -> None:
        self.find(selector).click()

    def open(self, server: ServerProcess, hash_: str = "") -> None:
        self.driver.get(f"{server.url}/console/{hash_}")

    def sign_in(self, server: ServerProcess, token: str | None = None) -> None:
        self.open(server)
        self.type_into("#token", token or server.token)
        self.click("#sign-in-button")
        if token is None:
            self.wait(
                "signed in", lambda: self.js("return !document.getElementById('sign-out').hidden")
            )

    def browse(self, server: ServerProcess, prefix: str, limit: int = 100) -> None:
        from urllib.parse import urlencode

        self.open(server, "#/browse?" + urlencode({"prefix": prefix, "limit": limit}))
        script = ("const s = document.getElementById('status');"
                  "return s && s.dataset.renderMs !== undefined"
                  " || document.getElementById('browse-error')")  # fmt: skip
        self.wait("the page of entries", lambda: self.js(script))

    def rows(self) -> dict[str, dict[str, str]]:
        return {r["key"]: r for r in self.js("""
            return [...document.querySelectorAll('#rows tr')].map((tr) => ({
              key: tr.children[0].textContent, value: tr.children[1].textContent,
              type: tr.children[2].textContent, stamp: tr.children[3].textContent,
              expires: tr.children[4].textContent}));""")}  # fmt: skip

    def open_row(self, key_text: str) -> None:
        self.js(
            """for (const tr of document.querySelectorAll('#rows tr'))
                     if (tr.children[0].textContent === arguments[0]) tr.click();""",
            key_text,
        )
        self.wait_text("#detail-key", key_text)

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "Chromium is missing: `make test` installs Debian's chromium and chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="denokv-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(driver: Any, tmp_path: Path, server_factory: ServerFactory) -> Iterator[Page]:
    # Asking for server_factory first means its servers stop after this page is torn down.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.get("about:blank")
    driver.get_log("browser")  # start with an empty log
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    yield Page(driver, downloads)
    for handle in driver.window_handles[1:]:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(driver.window_handles[0])
    driver.get("about:blank")  # ends the page's live streams before the servers stop
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    # 401 before sign-in and 409 on a conflict are expected answers, not page errors.
    unexpected = [
        e for e in errors if not any(f"status of {s}" in e["message"] for s in (401, 409))
    ]
    assert not unexpected, unexpected


def console_server(server_factory: ServerFactory, *extra: str) -> ServerProcess:
    return server_factory(extra_args=["--console", "read-write", *extra]).start()


def deno_get(server: ServerProcess, key: list[Any]) -> dict[str, Any]:
    entry: dict[str, Any] = run_deno(
        "console_kv.ts", server.url, "get", json.dumps(key), token=server.token
    )
    return entry


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sign_in_then_browse_every_type_deno_wrote(
    page: Page, server_factory: ServerFactory
) -> None:
    srv = console_server(server_factory)
    run_deno("console_values.ts", srv.url, "types", token=srv.token)
    page.sign_in(srv, token="wrong-token-123")
    page.wait_text("#sign-in-error", "Invalid access token.")
    assert page.js("return document.getElementById('sign-out').hidden")
    page.sign_in(srv)
    assert page.js("return document.cookie") == ""  # the session cookie is HttpOnly
    page.browse(srv, '["t"]')
    rows = page.rows()
    expected = {
        "string": ('"hello"', "string"), "string_digit": ('"1"', "string"),
        "number": ("1", "number"), "number_float": ("1.5", "number"),
        "number_neg_zero": ("-0", "number"), "number_nan": ("NaN", "number"),
        "bigint": ("1n", "bigint"), "bigint_huge": ("1267650600228229401496703205376n", "bigint"),
        "boolean": ("true", "boolean"), "null": ("null", "null"),
        "undefined": ("undefined", "undefined"),
        "date": ("2024-01-02T03:04:05.678Z", "Date"),
        "bytes": ("Uint8Array(3) [ 1, 2, 255 ]", "Uint8Array"),
        "map": ('Map(2) { "a" => 1, 2n => 1970-01-01T00:00:00.000Z }', "Map"),
        "set": ('Set(2) { "x", 1 }', "Set"),
        "nested": ('{ name: "Ada", tags: [ "a", { deep: [ 1n, null ] } ], '
                   'bytes: Uint8Array(1) [ 7 ] }', "object"),
        "u64": ("[Deno.KvU64: 42n]", "KvU64"),
    }  # fmt: skip
    shown = {k: (rows[f'["t", "{k}"]']["value"], rows[f'["t", "{k}"]']["type"]) for k in expected}
    assert shown == expected
    assert all(len(r["stamp"]) == 20 for r in rows.values())
    assert "in 60 min" in rows['["t", "expiring"]']["expires"]
    assert rows['["t", "string"]']["expires"] == ""
    page.open_row('["t", "nested"]')
    assert "deep: [ 1n, null ]" in page.text("#detail-value")
    assert page.js("return document.getElementById('edit-type').value") == "literal"
    page.shot("browse")
    page.browse(srv, '["k"]')
    key = '["k", "users", 1, 1n, true, Uint8Array(2) [ 1, 2 ]]'
    assert list(page.rows()) == [key]
    page.js("document.querySelectorAll('#rows a.part')[3].click()")  # the part 1n
    page.wait("the prefix of the clicked part", lambda: "1n" in page.text("#crumbs"))
    assert page.text("#crumbs").endswith('"k" / "users" / 1 / 1n')
    assert list(page.rows()) == [key]


@pytest.mark.slow
def test_a_thousand_entries_per_page_with_cursors_and_jumps(
    page: Page, server_factory: ServerFactory
) -> None:
    srv = console_server(server_factory)
    run_deno("console_values.ts", srv.url, "many", "2500", token=srv.token)
    page.sign_in(srv)
    page.browse(srv, '["many"]', limit=1000)
    render_ms = float(page.js("return document.getElementById('status').dataset.renderMs"))
    print(f"\n1,000 entries rendered in {render_ms:.0f} ms (build and layout, headless Chromium)")
    rows = list(page.rows())
    assert (len(rows), rows[0], rows[-1]) == (1000, '["many", 0]', '["many", 999]')
    assert page.js("return document.getElementById('prev').disabled")

    def go(button: str, first: str, count: int) -> None:
        page.click(button)
        page.wait(f"page starting at {first}", lambda: next(iter(page.rows()), None) == first)
        assert len(page.rows()) == count

    go("#next", '["many", 1000]', 1000)
    go("#next", '["many", 2000]', 500)
    assert page.js("return document.getElementById('next').disabled")
    go("#prev", '["many", 1000]', 1000)
    page.type_into("#goto-text", '["many", 2400]')
    page.click("#start-at")
    page.wait("the jump to a key", lambda: next(iter(page.rows()), None) == '["many", 2400]')
    assert len(page.rows()) == 100  # the page size of the new page
    page.type_into("#goto-text", '["many"]')
    page.click("#open-prefix")
    page.wait("the jump to a prefix", lambda: next(iter(page.rows()), None) == '["many", 0]')
    page.shot("paging")


@pytest.mark.slow
def test_an_edit_from_a_stale_page_is_a_conflict(page: Page, server_factory: ServerFactory) -> None:
    srv = console_server(server_factory)
    run_deno("console_values.ts", srv.url, "types", token=srv.token)
    page.sign_in(srv)
    page.browse(srv, '["t"]')
    page.open_row('["t", "string"]')  # tab A
    first_tab = page.driver.current_window_handle
    page.driver.switch_to.new_window("tab")  # tab B opens the same entry before A saves
    page.browse(srv, '["t"]')
    page.open_row('["t", "string"]')
    second_tab = page.driver.current_window_handle

    page.driver.switch_to.window(first_tab)
    page.type_into("#edit-text", "edited in tab A")
    page.click("#save")
    page.wait_text("#edit-ok", "Saved at versionstamp")

    page.driver.switch_to.window(second_tab)
    page.wait("tab B notices the change", lambda: not page.js(
        "return document.getElementById('stale-note').hidden"))  # fmt: skip
    page.type_into("#edit-text", "edited in tab B")
    page.click("#save")
    page.wait_text("#edit-error", CONFLICT)
    assert page.text("#conflict-current") == '"edited in tab A"'
    page.shot("conflict")
    assert deno_get(srv, ["t", "string"]) | {"versionstamp": None} == {
        "type": "string", "text": "edited in tab A", "versionstamp": None,
    }  # fmt: skip

    # The typed editor: "2" as a number stays a number, and the expiry is set.
    page.driver.switch_to.window(first_tab)
    page.open_row('["t", "number"]')
    page.find("#edit-type").send_keys("bigint")
    page.type_into("#edit-text", "2")
    page.type_into("#edit-expire", "3600")
    page.click("#save")
    page.wait_text("#edit-ok", "Saved")
    assert deno_get(srv, ["t", "number"])["type"] == "bigint"
    page.wait("the expiry shown", lambda: "expires" in page.text("#detail-meta"))
    page.click("#delete")
    page.wait_text("#edit-ok", "Deleted")
    assert deno_get(srv, ["t", "number"])["type"] == "null"


@pytest.mark.slow
def test_a_watched_key_and_the_page_follow_deno_writes(
    page: Page, server_factory: ServerFactory
) -> None:
    srv = console_server(server_factory)
    run_deno("console_values.ts", srv.url, "types", token=srv.token)
    page.sign_in(srv)
    page.browse(srv, '["t"]')
    page.type_into("#goto-text", '["watched"]')
    page.click("#watch-key")
    page.wait_text(".watched-value", "(no entry)")
    page.js("window.__notReloaded = 42")
    run_deno("watch_writer.ts", srv.url, "written by Deno", token=srv.token)
    page.wait_text(".watched-value", '"written by Deno"')
    run_deno("console_kv.ts", srv.url, "set", '["t", "string"]', '"changed by Deno"',
             token=srv.token)  # fmt: skip
    page.wait("the row to follow", lambda: page.rows()['["t", "string"]']["value"]
              == '"changed by Deno"')  # fmt: skip
    assert page.js("return window.__notReloaded") == 42  # no reload happened
    page.shot("live")


def test_html_in_keys_and_values_stays_text(page: Page, server_factory: ServerFactory) -> None:
    srv = console_server(server_factory)
    run_deno("console_values.ts", srv.url, "xss", token=srv.token)
    page.sign_in(srv)
    page.browse(srv, '["xss"]')
    rows = page.rows()
    key = '["xss", "<script>window.__xss = 2</script>", "<b>bold</b>"]'
    assert rows[key]["value"] == '"<img src=x onerror=window.__xss=1>"'
    assert "</td></tr><script>window.__xss=4</script>" in rows['["xss", "object"]']["value"]
    page.open_row(key)
    page.open_row('["xss", "object"]')
    time.sleep(0.3)  # give an injected image's onerror the time it would need
    assert page.js("return window.__xss") is None
    assert page.js("return document.querySelectorAll('main img, main script, main b').length") == 0
    csp = httpx.get(srv.url + "/console/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    page.shot("html-as-text")


@pytest.mark.slow
def test_export_a_prefix_and_import_it_into_an_empty_database(
    page: Page, server_factory: ServerFactory
) -> None:
    source = console_server(server_factory)
    run_deno("values_write.ts", source.url, token=source.token)  # every type Deno can store
    run_deno("console_values.ts", source.url, "types", token=source.token)
    page.sign_in(source)
    page.browse(source, '["v"]')
    page.click("#export")
    exported = page.wait("the download", lambda: [
        p for p in page.downloads.glob("*.jsonl") if p.stat().st_size > 0])  # fmt: skip
    time.sleep(0.3)
    lines = exported[0].read_text().splitlines()
    assert all(json.loads(line)["key"][0] == {"string": "v"} for line in lines)

    target = console_server(server_factory)
    page.sign_in(target)
    page.browse(target, "[]")
    page.find("#import-file").send_keys(str(exported[0]))
    page.wait_text("#import-report", f"Imported {len(lines)} of {len(lines)} entries in 1 atomic")
    page.shot("import")
    before = run_deno("console_dump.ts", source.url, '["v"]', token=source.token)
    after = run_deno("console_dump.ts", target.url, "[]", token=target.token)
    assert len(before) == len(lines) > 60
    assert after == before


def health_figures(server: ServerProcess) -> dict[str, Any]:
    auth = {"authorization": f"Bearer {server.token}"}
    figures: dict[str, Any] = httpx.get(server.url + "/console/api/health", headers=auth).json()
    return figures


@pytest.mark.s3
@pytest.mark.slow
def test_health_of_a_primary_with_backup_and_of_a_replica(
    page: Page, tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    s3 = ["--s3-bucket", bucket, "--s3-prefix", "kv/", "--s3-endpoint", endpoint,
          "--s3-force-path-style"]  # fmt: skip
    primary = ServerProcess(
        tmp_path / "primary.sqlite", env=s3_env(),
        extra_args=["--console", "read-write", *s3, "--s3-sync-interval", "200ms"],
    ).start()  # fmt: skip
    replica = ServerProcess(
        tmp_path / "replica.sqlite", token=primary.token, env=s3_env(),
        extra_args=["--console", "read-write", *s3, "--sync-from-s3", "--s3-poll-interval",
                    "200ms", "--primary-url", primary.url],
    )  # fmt: skip
    try:
        run_deno("console_values.ts", primary.url, "types", token=primary.token)
        replica.start()
        page.sign_in(primary)
        page.open(primary, "#/health")
        page.wait_text("#fig-role", "primary")
        plotted = "return document.querySelector('#fig-commits polyline') !== null"
        page.wait("a commit rate plotted", lambda: page.js(plotted), timeout=20)
        page.wait("an upload", lambda: "ago" in page.text("#fig-last-upload"), timeout=20)
        # The page refreshes every 2 s; what it shows catches up with what the API says.
        page.wait("the data version", lambda: page.text("#fig-version").endswith(
            health_figures(primary)["data_version"]))  # fmt: skip
        shown = health_figures(primary)
        backup = shown["backup"]
        assert int(shown["data_version"], 16) > 0
        assert page.text("#fig-generation").endswith(backup["generation"])
        assert page.text("#fig-backlog").endswith(" entries")
        assert page.text("#fig-errors").endswith("0")
        assert page.text("#fig-backlog-age") not in ("", "—")
        point = shown["recovery_points"][-1]
        assert point["generation"] == backup["generation"] and point["to_versionstamp"]
        page.click("#at-versionstamp")
        command = page.text("#restore-command")
        assert command.endswith(f" --at {point['to_versionstamp']}")
        page.shot("health-primary")

        # An edit made on the replica's console is forwarded to the primary.
        page.browse(replica, '["t"]')
        page.wait("the replica's copy", lambda: '["t", "string"]' in page.rows(), timeout=30)
        page.open_row('["t", "string"]')
        page.type_into("#edit-text", "edited on the replica")
        page.click("#save")
        page.wait_text("#edit-ok", "Saved")
        assert deno_get(primary, ["t", "string"])["text"] == "edited on the replica"

        page.open(replica, "#/health")
        page.wait_text("#fig-role", "replica")
        page.wait("the replica's progress", lambda: page.text("#fig-applied") not in ("", "—"))
        page.wait("the applied versionstamp", lambda: page.text("#fig-applied").endswith(
            health_figures(replica)["replica"]["applied_versionstamp"]))  # fmt: skip
        assert page.text("#fig-lag").endswith(" s")
        assert page.text("#fig-replica-generation").endswith(backup["generation"])
        page.shot("health-replica")
        assert shown["restore_location_known"], command
        assert command == (
            f"denokv --sqlite-path ./restored.sqlite pitr restore --s3-bucket {bucket} "
            f"--s3-prefix kv/ --s3-endpoint {endpoint} --at {point['to_versionstamp']}"
        )
    finally:
        page.driver.get("about:blank")
        if replica.proc is not None:
            replica.stop()
        primary.stop()
