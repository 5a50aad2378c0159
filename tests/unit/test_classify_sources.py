"""A head that records no feature sources (an older version's) is refused by name, not read as a bare CNN head."""

from __future__ import annotations

import numpy as np
import pytest

from cbedtdc.classify import load_run
from cbedtdc.errors import InputError
from cbedtdc.heads import fit_head


def test_a_head_without_recorded_sources_is_named(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)).astype(np.float32), np.arange(20) % 2
    head = fit_head(X, y, 2, spec={"kind": "linear", "epochs": 1}, info={"classes": [14, 225],
                                                                       "backbone": "results/flat/ce/best.pt"})
    folder = tmp_path / "heads" / "flat" / "old"
    folder.mkdir(parents=True)
    head.save(folder / "head.pt")
    with pytest.raises(InputError, match=r"old/head\.pt records no feature sources .*retrain it"):
        load_run(folder)
