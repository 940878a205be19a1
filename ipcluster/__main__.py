"""``python -m ipcluster``: the ``ipcluster`` command."""

import sys

from ipcluster.cli import main

sys.exit(main())
