"""What authentication and encryption cost: HMAC signing per message, and task and data
throughput with CurveZMQ on and off (same machine, loopback).

    python -m benchmarks.wire_security
"""

from __future__ import annotations

import os
import time
import timeit

import numpy as np

import ipcluster
from ipcluster import serialize
from ipcluster.protocol import HEAD, Replay, Signer, decode, encode, head


def signing() -> dict:
    signer = Signer(os.urandom(32))
    content, _ = serialize.dumps_call(max, (1, 2), {})
    header = {"kind": "apply", "id": "0123456789ab-42", "tasks": ["0123456789ab-41"],
              "targets": None, "balanced": True, "submitted": time.time()}
    frames = encode(signer, dict(header), content)
    n = 100_000
    signed = frames[0][HEAD - 4:]  # size, header, content: what the signature covers
    sign = timeit.timeit(lambda: signer.sign(signed), number=n) / n
    enc = timeit.timeit(lambda: encode(signer, dict(header), content), number=n) / n
    replay = Replay()
    received = iter([encode(signer, dict(header, id=str(i)), content) for i in range(n)])
    dec = timeit.timeit(lambda: decode(signer, next(received), replay), number=n) / n
    return {"sign_us": sign * 1e6, "encode_us": enc * 1e6, "decode_check_us": dec * 1e6,
            "header_bytes": head(frames[0])[0], "content_bytes": len(content)}


def throughput(curve: bool) -> dict:
    with ipcluster.Cluster(n=2, controller_ip="127.0.0.1", curve=curve) as rc:
        view = rc.load_balanced_view()
        view.map_sync(abs, range(100))  # warm up
        t0 = time.perf_counter()
        ars = [view.apply_async(abs, i) for i in range(3000)]
        [ar.get() for ar in ars]
        tasks = 3000 / (time.perf_counter() - t0)
        a = np.ones(100 * 2**20 // 8)
        t0 = time.perf_counter()
        rc[0].push({"a": a}, block=True)
        rc[0].pull("a", block=True)
        mbs = 2 * a.nbytes / 2**20 / (time.perf_counter() - t0)
    return {"tasks_per_s": tasks, "push_pull_100MB_MBps": mbs}


def main() -> None:
    s = signing()
    print(f"HMAC-SHA256 of one apply ({s['header_bytes']} B header + {s['content_bytes']} B content): "
          f"{s['sign_us']:.2f} us; encode {s['encode_us']:.2f} us; check on receipt "
          f"(signature, replay window) {s['decode_check_us']:.2f} us")
    for curve in (False, True):
        t = throughput(curve)
        print(f"curve {'on ' if curve else 'off'}: {t['tasks_per_s']:,.0f} tasks/s submitted one by "
              f"one; push+pull of 100 MB: {t['push_pull_100MB_MBps']:,.0f} MB/s")


if __name__ == "__main__":
    main()
