"""A SIGINT or SIGTERM handler of the user's (a batch script's graceful stop) runs after what
the client must not leave half-done, and after the client's locks are let go: a handler that
closes the client (or sends) neither deadlocks nor stalls."""

import subprocess
import sys
import textwrap


def test_a_sigterm_handler_that_closes_the_client_during_a_send_returns(cluster):
    script = textwrap.dedent(f"""
        import signal, sys
        import ipcluster
        from ipcluster import transport

        rc = ipcluster.Client({str(cluster.connection_file)!r})
        rc.wait_for_engines(1, timeout=30)

        def on_term(signum, frame):  # a batch script's graceful stop
            rc.close()
            print("closed", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, on_term)
        real, fired = transport.send, []

        def send(sock, frames, track=False):  # SIGTERM arrives while a message goes
            if len(frames) > 1 and not fired:
                fired.append(1)
                signal.raise_signal(signal.SIGTERM)
            return real(sock, frames, track)

        transport.send = send
        rc.load_balanced_view().apply_async(len, bytearray(1 << 17))  # 2 frames: held
        print("not reached", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the handler never returned (deadlock on wire.lock): {out!r}")
    assert "closed" in out and proc.returncode == 3, (out, err[-2000:])


def test_a_sigterm_handler_closing_the_client_while_it_waits_is_prompt(cluster):
    script = textwrap.dedent(f"""
        import signal, sys, time
        import ipcluster

        rc = ipcluster.Client({str(cluster.connection_file)!r})
        rc.wait_for_engines(1, timeout=30)

        def on_term(signum, frame):  # a batch script's graceful stop
            t0 = time.monotonic()
            rc.close()
            print(f"closed in {{time.monotonic() - t0:.2f}}", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, on_term)
        receiver = rc._session.receiver
        real, fired = receiver._handle, []

        def handle(received):  # SIGTERM arrives while the waiting thread handles a result
            if not fired:
                fired.append(1)
                signal.raise_signal(signal.SIGTERM)
            return real(received)

        receiver._handle = handle
        rc[0].apply_sync(divmod, 7, 2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3, proc.stderr[-2000:]
    took = float(proc.stdout.split("closed in ")[1])
    assert took < 2, f"close() from the handler took {took} s"
