"""``python -m mammo_utils`` runs the ``mammo`` command line."""

import sys

from mammo_utils.cli import main

sys.exit(main())
