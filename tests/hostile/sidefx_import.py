"""A module whose mere import writes a sentinel: a bundle that gets it imported has run code.

Test data for the hostile suite; nothing in the suite imports it on purpose.
"""

import os
from pathlib import Path

_dir = os.environ.get("NBMP_HOSTILE_SENTINELS")
if _dir:
    Path(_dir, "sidefx-import").write_text("imported")
