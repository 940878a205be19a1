"""A headless Chromium from the system's packages (Debian's chromium and chromium-driver, which
`.ci/test` installs), driven by Selenium; nothing is downloaded by a browser installer. A test
that fails leaves a screenshot of the page in the test's output directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.launchers.conftest import require

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("IPCLUSTER_TEST_OUTPUT", "test-output"))


def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser(request):
    require(bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
            "headless Chromium (Debian's chromium and chromium-driver)")
    driver = chromium()
    try:
        yield driver
    finally:
        report = getattr(request.node, "call_report", None)
        if report is not None and report.failed:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            path = SCREENSHOTS / f"{request.node.name}.png"
            driver.save_screenshot(str(path))
            print(f"screenshot of the page: {path.resolve()}")
        driver.quit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.call_report = report
