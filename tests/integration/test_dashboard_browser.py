"""The monitor's dashboard in headless Chromium, over a running pipeline.

Serve answers replayed interactions with the real model while their feedback follows; the
monitor reads the topics. The page must show live data in its charts, and an adapter
published mid-run must appear on the adapter timeline, promoted and swapped in.
Chromium and its driver are Debian's (``ops/browser.sh``); Selenium never downloads one.
Without them the test skips, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from streamtune.core.settings import Settings
from streamtune.monitor.dashboard import Monitor
from streamtune.replay import read_rows, replay
from tests.conftest import DATA, free_port
from tests.serve_helpers import TASK, make_keys, publish, running_server, trained_blob

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMEDRIVER = Path("/usr/bin/chromedriver")
VERSION = "browser-v1"

#: Points that a chart's traces hold, read from the Plotly figure in the page.
POINTS = """
const gd = document.getElementById(arguments[0]);
if (!gd || !gd.data) return 0;
return gd.data.reduce((n, t) => n + (t.y || []).filter((y) => y !== null).length, 0);
"""
TIMELINE = """
const gd = document.getElementById("chart-timeline");
if (!gd || !gd.data) return [];
return gd.data.flatMap((t) => (t.text || []).map((v) => t.name + ":" + v));
"""


def chrome():  # type: ignore[no-untyped-def]
    browser = shutil.which("chromium")
    if browser is None or not CHROMEDRIVER.exists():
        missing = "chromium and chromium-driver are not installed: run `bash ops/browser.sh`"
        if os.environ.get("CI"):  # CI installs them (.ci/run): their absence is a failure
            pytest.fail(f"CI: {missing}")
        pytest.skip(missing)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1600,2000")
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


async def until(probe, check, timeout_s: float = 90.0):  # type: ignore[no-untyped-def]
    """Poll ``probe`` (run in a thread) until ``check(value)``; the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await asyncio.to_thread(probe)
        if check(value):
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"not met in {timeout_s:.0f}s; last value {value!r}")
        await asyncio.sleep(0.5)


# Serve's start, the monitor's (60 s), five waits on the page (90 s each).
@pytest.mark.timeout(900)
def test_dashboard_shows_live_data_and_a_newly_promoted_adapter(topics, tmp_path):
    driver = chrome()
    keys = make_keys(tmp_path / "keys")
    settings = Settings(
        **{
            **topics.model_dump(),
            "trusted_keys_dir": keys.trusted_dir,
            "serve_tasks": TASK,
            "serve_group_id": f"{topics.topic_prefix}serve",
            "monitor_cbpe_block": 20,
            "monitor_window": 50,
            "health_interval_s": 0.5,
        }
    )
    port = free_port()
    shot = tmp_path / "dashboard.png"

    async def go() -> None:
        blob = await asyncio.to_thread(trained_blob, 0)
        async with running_server(settings):
            stop = asyncio.Event()
            monitor = Monitor(settings, port=port)
            watching = asyncio.create_task(monitor.run(stop))
            await asyncio.wait_for(monitor.ready.wait(), 60)
            rows = read_rows(DATA / "tfns" / "valid.csv", TASK, limit=240)
            traffic = asyncio.create_task(
                replay(settings, rows, task=TASK, rate=40, feedback_fraction=1.0,
                       feedback_delay_s=0.5, id_prefix="b", progress=False)
            )  # fmt: skip
            try:
                await asyncio.to_thread(driver.get, f"http://127.0.0.1:{port}/")
                for chart in ("chart-throughput", "chart-accuracy", "chart-cbpe"):
                    await until(lambda c=chart: driver.execute_script(POINTS, c), lambda n: n >= 2)
                await publish(settings, keys.signer, VERSION, blob)
                seen = await until(
                    lambda: driver.execute_script(TIMELINE),
                    lambda names: f"promoted:{VERSION}" in names and f"swapped:{VERSION}" in names,
                )
                assert f"promoted:{VERSION}" in seen
                await traffic
                await until(lambda: driver.execute_script(POINTS, "chart-cbpe"), lambda n: n >= 8)
                await asyncio.sleep(2.5)  # one more refresh with the whole run
                await asyncio.to_thread(driver.save_screenshot, str(shot))
            finally:
                traffic.cancel()
                stop.set()
                await watching

    try:
        asyncio.run(go())
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
    if os.environ.get("STREAMTUNE_DASHBOARD_SCREENSHOT"):
        shutil.copy(shot, os.environ["STREAMTUNE_DASHBOARD_SCREENSHOT"])
