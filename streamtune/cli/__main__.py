"""``python -m streamtune.cli``: the same as the ``streamtune`` command."""

import sys

from streamtune.cli import main

sys.exit(main())
