"""Where the development tooling finds the repository's deploy files.

adoptstream_dev runs from a checkout (`make install` installs it editable), never from a wheel: the
monitoring stack and the demo use the same Prometheus rules and Alertmanager templates as production,
read from `deploy/`, not copies.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"

if not DEPLOY.is_dir():  # an install outside a checkout: say so instead of failing on a missing file later
    raise ImportError(f"adoptstream_dev needs a checkout of the adoptstream repository ({DEPLOY} is missing)")
