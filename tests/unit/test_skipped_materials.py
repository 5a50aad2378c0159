"""Materials the generator could not simulate (a file's ``skipped_materials``) are reported by the data stage:
nothing is dropped silently."""

from __future__ import annotations

import logging

import h5py

from cbedtdc.data.manifest import build_manifest, write_manifest
from cbedtdc.io import index_file, read_json
from cbedtdc.synth import synthesize_file

LINE = "synth-test-1 (space group 225): specimen of 6000000 atoms above MAX_ATOMS"


def test_the_manifest_report_lists_the_materials_not_simulated(tmp_path, caplog):
    path = synthesize_file(tmp_path / "batch_test_0.h5", 0, 1, classes=[14, 225], split_materials=(4, 2, 2),
                           image_size=16, energies_per_material=1)
    plain = index_file(path)
    assert plain["skipped_materials"] == []
    with h5py.File(path, "a") as f:  # what write_file records in multislice mode
        f.attrs["skipped_materials"] = LINE
    idx = index_file(path)
    assert idx["skipped_materials"] == [LINE] and idx["seen"] == plain["seen"] == 1
    _, quarantine, report = build_manifest([idx])
    assert report["materials_not_simulated"] == [f"batch_test_0.h5: {LINE}"] and quarantine == []
    with caplog.at_level(logging.WARNING):
        write_manifest([idx], tmp_path / "m.csv", tmp_path / "q.csv", tmp_path / "r.json", max_fraction=0.5)
    assert f"not simulated by the generator, so no samples: batch_test_0.h5: {LINE}" in caplog.text
    assert read_json(tmp_path / "r.json")["materials_not_simulated"] == [f"batch_test_0.h5: {LINE}"]
