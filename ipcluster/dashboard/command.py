"""Surfaces layer: ``ipcluster dashboard [CLUSTER_ID] [--open]``: print the link of a running
cluster's dashboard (starting it on first use), and ``--serve``, the dashboard process itself."""

from __future__ import annotations

import argparse
import sys
import webbrowser

from ipcluster import connection, state
from ipcluster.dashboard.link import dashboard_link
from ipcluster.errors import IpclusterError


def add_parser(sub) -> None:
    parser = sub.add_parser("dashboard", help="print (and start) a running cluster's dashboard link")
    parser.add_argument("cluster_id", nargs="?", default=None,
                        help="cluster id or connection file (default: the one running cluster)")
    parser.add_argument("--open", action="store_true", help="open the link in a web browser")
    parser.add_argument("--ip", default="127.0.0.1",
                        help="address the dashboard binds (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--serve", action="store_true",
                        help="run the dashboard process here (what the link starts)")
    parser.add_argument("--connection-file", default=None, help=argparse.SUPPRESS)


def cmd_dashboard(args) -> int:
    try:
        path = connection.find(args.connection_file or state.choose(args.cluster_id))
        if args.serve:
            from ipcluster.dashboard.server import serve

            return serve(path, args.ip, args.port)
        url = dashboard_link(path, ip=args.ip, port=args.port)
    except IpclusterError as exc:
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    print(url, flush=True)
    if args.open:
        webbrowser.open(url)
    return 0
