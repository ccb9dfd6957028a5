"""``python -m sample_app``: run the demo."""

import sys

from .demo import main

sys.exit(main())
