"""``python -m papermail_dev.evaluate CORPUS.jsonl``."""

from __future__ import annotations

import sys

from papermail_dev.evaluate.cli import main

sys.exit(main())
