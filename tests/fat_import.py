"""A task module that allocates (and touches) FAT_IMPORT_MB MiB when imported."""

from __future__ import annotations

import os

BALLAST = bytearray(int(float(os.environ.get("FAT_IMPORT_MB", "60")) * 1024 * 1024))
for _i in range(0, len(BALLAST), 4096):
    BALLAST[_i] = 1
