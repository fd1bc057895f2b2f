"""Where the shared reference data lives (real captures, tshark oracles, Kamailio rows).

It is not in the repository: by default ``../shared`` beside the checkout, or the
directory named by ``SIPCAPTOOL_SHARED``. Tests that read it carry
``pytestmark = needs_shared("corpus")`` (or ``"reference"``): without the data they
skip, and with ``SIPCAPTOOL_REQUIRE_SERVICES=1`` (CI) they fail instead (see conftest).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("SIPCAPTOOL_SHARED")
              or Path(__file__).resolve().parents[2] / "shared")
REFERENCE = SHARED / "reference"
CORPUS = SHARED / "corpus"


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Mark a test (or a module, as ``pytestmark``) as reading ``SHARED/<parts>``."""
    return pytest.mark.shared_data(*parts)


def missing(parts: tuple[str, ...]) -> str | None:
    """The path a test needs that is absent, or None."""
    path = SHARED.joinpath(*parts) if parts else SHARED
    return None if path.is_dir() else str(path)
