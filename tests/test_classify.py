"""Reading new challenge-layout files for ``cbedtdc classify`` (the end-to-end classify run is in test_pipeline)."""

import numpy as np
import pytest
from fixtures import make_sample, write_challenge_file

from cbedtdc.classify import find_inputs, read_samples


def test_read_samples_keeps_good_samples_and_names_the_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    good = make_sample("sample_0_0", 14, "mp-1", side=32, rng=rng)
    nan = make_sample("sample_1_0", 225, "mp-2", side=32, rng=rng)
    nan["stack"] = nan["stack"].copy()
    nan["stack"][1, 2, 3] = np.nan
    unlabelled = make_sample("sample_2_0", 14, "mp-3", side=32, rng=rng)
    del unlabelled["attrs"]["space_group"]  # new data need not carry a label
    small = make_sample("sample_3_0", 14, "mp-4", side=8, rng=rng)
    empty = {"group": "sample_4_0", "stack": None, "attrs": {}}
    path = write_challenge_file(tmp_path / "new.h5", [good, nan, unlabelled, small, empty])
    out = {g: (img, truth, why) for g, img, truth, why in read_samples(path, 16)}
    assert out["sample_0_0"][0].shape == (3, 16, 16) and out["sample_0_0"][0].dtype == np.uint8
    assert out["sample_0_0"][1] == 14 and out["sample_0_0"][2] == ""
    assert out["sample_1_0"][0] is None and "non-finite" in out["sample_1_0"][2]
    assert out["sample_2_0"][1] is None and out["sample_2_0"][2] == ""
    assert "smaller than image_size 16" in out["sample_3_0"][2]
    assert "missing dataset cbed_stack" in out["sample_4_0"][2]
    (tmp_path / "junk.h5").write_bytes(b"junk")
    [(group, img, _, why)] = list(read_samples(tmp_path / "junk.h5", 16))
    assert group == "" and img is None and why.startswith("cannot open")
    with pytest.raises(FileNotFoundError, match="nothing.h5: no such file or folder"):
        find_inputs([tmp_path / "nothing.h5"])
    assert find_inputs([tmp_path]) == [tmp_path / "junk.h5", tmp_path / "new.h5"]
