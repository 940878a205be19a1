"""Regenerate docs/images/dashboard.png: the dashboard during a 4-engine sweep, in headless
Chromium (Debian's chromium and chromium-driver).

    python docs/screenshot.py
"""

from __future__ import annotations

import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

import ipcluster

OUT = Path(__file__).resolve().parent / "images" / "dashboard.png"


def simulate(x):
    import math
    import time

    time.sleep(0.15 + 0.1 * (x % 3))
    print(f"point {x}: {math.sin(x):.3f}")
    return math.sin(x)


def fit(x):
    import time

    time.sleep(0.3)
    if x == 7:
        raise ValueError(f"fit did not converge for x={x}")
    return x


def main() -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    with ipcluster.Cluster(n=4) as rc:
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            browser.get(rc.dashboard_link + "/")
            view = rc.load_balanced_view()
            fits = view.map_async(fit, range(12), label="fit")
            sweep = view.map_async(simulate, range(60), label="simulate")
            while sweep.progress < 30:  # mid-sweep: bars, a queue, an error, output
                time.sleep(0.1)
            time.sleep(1.0)  # let the page draw the last batch
            OUT.parent.mkdir(exist_ok=True)
            browser.save_screenshot(str(OUT))
            sweep.wait(), fits.wait()
        finally:
            browser.quit()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
