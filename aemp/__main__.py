"""``python -m aemp``: the aemp command."""

import sys

from ._cli import main

sys.exit(main())
