"""Everything an LSS process creates is private to the user running it.

Every process (broker, workers, supervisor, gateway) calls `private_state_dir` first
thing, through `protocol.logs.setup_logging`: from then on its umask is 077, so files
it creates (the results store and its WAL, logs, the endpoints file, fetched data) are
0600 and directories 0700; and the state directory itself is 0700, created so or
tightened if it already existed wider (its contents are then out of other users' reach
whatever their own modes).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_state_dir(state_dir: str | Path) -> int | None:
    """Set umask 077 and make `state_dir` exist, readable by its owner only (0700).

    Returns the directory's former mode when it had to be tightened, else None.
    Raises OSError when it cannot be created or tightened (another user's directory).
    """
    os.umask(PRIVATE_UMASK)
    path = Path(state_dir)
    path.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & PRIVATE_UMASK:
        return None
    path.chmod(mode & ~PRIVATE_UMASK)
    return mode
