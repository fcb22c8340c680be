"""maskds makes no network call of its own when its modules are imported (offline training and inference)."""
from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import urllib.request
calls = []
def record(self, url, *args, **kwargs):
    calls.append(getattr(url, "full_url", url))
    raise OSError("offline")
urllib.request.OpenerDirector.open = record
import maskds.model.transforms, maskds.inference.predict  # albumentations among their imports
print("CALLS", calls)
"""


def test_importing_the_pipeline_asks_no_server_for_updates():
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    assert "CALLS []" in out, out
