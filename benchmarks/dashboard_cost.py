"""What an open dashboard costs: 10,000 no-op tasks submitted one by one through a
load-balanced view on two engines (the suite's "tasks one by one" case), in alternating runs
without and with the dashboard open in headless Chromium (the page live, the controller
sending its batches); and what the dashboard itself takes (its start, its memory). A cluster
nobody looks at has no dashboard process.

    python -m benchmarks.dashboard_cost [--pairs 3] [--tasks 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psutil

import ipcluster
from ipcluster.dashboard import link


def noop():
    return None


def rate(view, n: int) -> float:
    t0 = time.perf_counter()
    ars = [view.apply_async(noop) for _ in range(n)]
    for ar in ars:
        ar.get()
    return n / (time.perf_counter() - t0)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    off, on, starts, rss = [], [], [], []
    for _ in range(args.pairs):
        for open_page in (False, True):
            with ipcluster.Cluster(n=2) as rc:
                view = rc.load_balanced_view()
                view.map_sync(abs, range(100))  # warm
                page = None
                if open_page:
                    t0 = time.perf_counter()
                    url = rc.dashboard_link
                    starts.append(time.perf_counter() - t0)
                    page = browser()
                    page.get(url + "/")
                    time.sleep(2)  # the page loaded and live
                try:
                    (on if open_page else off).append(rate(view, args.tasks))
                    if open_page:
                        rss.append(psutil.Process(link.read(rc.connection_file.parent)["pid"])
                                   .memory_info().rss)
                finally:
                    if page is not None:
                        page.quit()
    print(f"tasks one by one ({args.tasks:,} no-ops, 2 engines), {args.pairs} alternating pairs:")
    print(f"  no dashboard:        median {statistics.median(off):,.0f} tasks/s  runs {[round(r) for r in off]}")
    print(f"  dashboard open:      median {statistics.median(on):,.0f} tasks/s  runs {[round(r) for r in on]}")
    print(f"  ratio (open / none): {statistics.median(on) / statistics.median(off):.2f}")
    print(f"  dashboard start (first rc.dashboard_link): median {statistics.median(starts):.2f} s; "
          f"its RSS {statistics.median(rss) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
