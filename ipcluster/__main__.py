"""``python -m ipcluster``: the ``ipcluster`` command."""

import sys

if sys.argv[1:2] == ["engine"]:  # the engine alone: no client API, no CLI imported
    from ipcluster.engine.command import main as engine_main

    sys.exit(engine_main(sys.argv[2:]))

from ipcluster.cli import main  # noqa: E402

sys.exit(main())
