"""What libzmq itself costs for many engines: N DEALER sockets against one bare ROUTER.

    python -m benchmarks.zmqscale --engines 10000 [--per-process 1000]

The ROUTER runs in its own process and does nothing but count the one message each DEALER
sends and answer it; the DEALERs run in as many processes as needed. Printed: the time until
every DEALER has its answer, the RSS and open file descriptors of the ROUTER's process and of
each DEALER process, and the limits on open files. This is the floor under any controller
with one socket per engine: what is left is the controller's own per-engine cost.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time

import psutil
import zmq


def raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def router(port_queue, total: int, done, backlog: int) -> None:
    raise_fd_limit()
    ctx = zmq.Context()
    ctx.setsockopt(zmq.MAX_SOCKETS, 65536)
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.BACKLOG, backlog)  # pending connections; libzmq's default is 100
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    port_queue.put(port)
    seen = 0
    while seen < total:
        identity, body = sock.recv_multipart()
        sock.send_multipart([identity, body])
        seen += 1
    proc = psutil.Process()  # measured while every connection is open: the dealers wait
    done.put({"rss_MiB": round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds()})
    time.sleep(1)  # keep the connections while the dealers measure themselves
    ctx.destroy(linger=0)


def dealers(port: int, count: int, out) -> None:
    raise_fd_limit()
    ctx = zmq.Context()
    ctx.setsockopt(zmq.MAX_SOCKETS, 65536)
    socks = []
    for _ in range(count):
        s = ctx.socket(zmq.DEALER)
        s.connect(f"tcp://127.0.0.1:{port}")
        s.send(b"hello")
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    waiting = set(socks)
    while waiting:
        for s, _ in poller.poll(1000):
            s.recv()
            waiting.discard(s)
            poller.unregister(s)
    proc = psutil.Process()
    out.put({"rss_MiB": round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds()})
    time.sleep(3)  # stay connected until the router has measured itself
    ctx.destroy(linger=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=10_000)
    parser.add_argument("--per-process", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=4096,
                        help="the ROUTER's listen backlog (libzmq's default: 100)")
    args = parser.parse_args()
    soft, hard = raise_fd_limit()
    mp = multiprocessing.get_context("spawn")
    ports, done, out = mp.Queue(), mp.Queue(), mp.Queue()
    t0 = time.perf_counter()
    server = mp.Process(target=router, args=(ports, args.engines, done, args.backlog))
    server.start()
    port = ports.get(timeout=30)
    counts = [min(args.per_process, args.engines - i) for i in range(0, args.engines, args.per_process)]
    clients = [mp.Process(target=dealers, args=(port, k, out)) for k in counts]
    for c in clients:
        c.start()
    router_figures = done.get(timeout=600)
    seconds = time.perf_counter() - t0
    dealer_figures = [out.get(timeout=60) for _ in clients]
    for c in clients:
        c.join()
    server.join()
    print(json.dumps({
        "engines": args.engines, "dealer_processes": len(clients),
        "seconds_until_all_answered": round(seconds, 2),
        "router": router_figures,
        "dealer_process_rss_MiB": [d["rss_MiB"] for d in dealer_figures],
        "dealer_process_fds": [d["fds"] for d in dealer_figures],
        "open_files_limit": {"soft": soft, "hard": hard}, "pid": os.getpid(),
    }, indent=1))


if __name__ == "__main__":
    main()
