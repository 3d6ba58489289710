"""A non-allowed module whose import writes a sentinel, with a harmless-looking ``torch.nn.Module``.

Test data for the hostile suite; nothing in the suite imports it on purpose.
"""

import os
from pathlib import Path

import torch

_dir = os.environ.get("NBMP_HOSTILE_SENTINELS")
if _dir:
    Path(_dir, "sidefx-class").write_text("imported")


class Net(torch.nn.Linear):
    """Shaped like the base bundle's ``Linear(8, 4)``, so only the import itself is the attack."""

    def __init__(self) -> None:
        super().__init__(8, 4)
