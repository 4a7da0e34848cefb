"""``python -m deepauc.research.toy``: the same as ``deepauc toy``."""

import sys

from deepauc.research.toy import main

sys.exit(main())
