"""What third-party libraries would write outside our folders, kept in them.

Set once, when ``harness`` is imported, before any of these libraries is (they read the variables at
import); a variable the user set is left alone. Child processes (Ray workers, Triton's python-backend
stubs) inherit them.

- onnxruntime (1.2x) writes a device id and queued telemetry events under
  ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` when it is imported: ``ORT_DISABLE_TELEMETRY=1``
  turns that off (its ``disable_telemetry_events()`` comes too late: the folder is written at import).
- matplotlib keeps its font cache in ``$MPLCONFIGDIR``, else ``~/.config/matplotlib`` or
  ``~/.cache/matplotlib``: ``MPLCONFIGDIR`` goes under our cache root (``rospr.cachedirs``).
- torch makes ``<tmp>/torchinductor_<user>`` while it exports (and keeps it): ``TORCHINDUCTOR_CACHE_DIR``
  goes under our cache root too.
"""

from __future__ import annotations

import os

from rospr.cachedirs import cache_home


def keep_third_parties_in_our_folders() -> None:
    """Set the environment variables above that are unset (idempotent)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = str(cache_home() / "matplotlib")
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_home() / "torchinductor")
