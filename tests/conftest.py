"""Shared pytest fixtures. Real-layout data builders live in tests/fixtures.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from fixtures import ...` from any test file

from fixtures import build_tiny_shards  # noqa: E402


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Shard root of a tiny 3-class data set (14, 225, 1): 6 train, 3 dev, 3 test samples per class,
    32 px raw stacks shrunk to 16 px shards. Built once per session; treat it as read-only."""
    return build_tiny_shards(tmp_path_factory.mktemp("tiny_shards"), classes=(14, 225, 1), per_class=6, side=32,
                             image_size=16, seed=0)
