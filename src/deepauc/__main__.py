"""``python -m deepauc`` is the same as the ``deepauc`` command."""

import sys

from deepauc.cli import main

sys.exit(main())
