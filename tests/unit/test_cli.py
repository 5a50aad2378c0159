"""The ``cbedtdc`` console script's error paths: a known error (the project's own, an OSError, the S3 server's
answer to fetch) is one line naming the file or key and exit code 2; any other error keeps its traceback."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EndpointConnectionError

import cbedtdc.fetch
from cbedtdc.cli import main
from cbedtdc.errors import InputError


def error_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


# --------------------------------------------------------------------------- fetch
def test_fetch_keeps_the_traceback_of_an_unexpected_error(tmp_path, monkeypatch):
    def bug(*a, **k):
        raise RuntimeError("a bug in the download loop")

    monkeypatch.setattr(cbedtdc.fetch, "fetch_mirror", bug)
    with pytest.raises(RuntimeError, match="a bug in the download loop"):
        main(["fetch", str(tmp_path / "d")])


@pytest.mark.parametrize("err, words", [
    (InputError("s3://bucket/x/../y: key escapes the destination folder"), "InputError: s3://bucket/x/../y: key"),
    (PermissionError(13, "Permission denied", "/data/mirror"), "Permission denied: '/data/mirror'"),
])
def test_fetch_reports_a_known_error_in_one_line(tmp_path, monkeypatch, caplog, err, words):
    def fail(*a, **k):
        raise err

    monkeypatch.setattr(cbedtdc.fetch, "fetch_mirror", fail)
    assert main(["fetch", str(tmp_path / "d")]) == 2
    [line] = error_lines(caplog)
    assert words in line and "\n" not in line


def test_fetch_names_an_unreachable_server_and_what_to_check(tmp_path, monkeypatch, caplog):
    def fail(*a, **k):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket")

    monkeypatch.setattr(cbedtdc.fetch, "fetch_mirror", fail)
    assert main(["fetch", str(tmp_path / "d"), "--endpoint-url", "http://127.0.0.1:9", "--bucket", "b"]) == 2
    first, advice = error_lines(caplog)
    assert first.startswith("EndpointConnectionError: ") and "http://127.0.0.1:9/bucket" in first
    assert "check --endpoint-url http://127.0.0.1:9, --bucket b" in advice and "same command again" in advice


# --------------------------------------------------------------------------- table
def test_table_names_the_file_and_the_missing_key(tmp_path, caplog):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"chance": {"majority": 0.1}, "flat": {}}))  # no "prior"
    assert main(["table", str(path)]) == 2
    [line] = error_lines(caplog)
    assert line.startswith(f"InputError: {path}: no key 'prior'") and "rule evaluate" in line


@pytest.mark.parametrize("text, words", [("{not json", "not JSON"), ("[1, 2]", "a JSON list, not an object")])
def test_table_names_a_file_that_is_not_a_summary(tmp_path, caplog, text, words):
    path = tmp_path / "summary.json"
    path.write_text(text)
    assert main(["table", str(path)]) == 2
    [line] = error_lines(caplog)
    assert f"{path}: {words}" in line


def test_table_of_a_missing_file_is_one_line(tmp_path, caplog):
    assert main(["table", str(tmp_path / "gone.json")]) == 2
    [line] = error_lines(caplog)
    assert line.startswith("FileNotFoundError: ") and "gone.json" in line


def test_table_prints_a_complete_summary(tmp_path, capsys):
    t = {"mode": "rest", "levels": [[14, 225], [1]], "routing": "argmax", "top1": 0.5, "balanced_accuracy": 0.4,
         "estimated_top1": 0.6}
    s = {"chance": {"majority": 0.3, "prior": 0.2}, "flat": {"top1": 0.45, "balanced_accuracy": 0.35}, "tdc": t,
         "n_test": 9, "n_test_materials": 9, "bootstrap": {"resamples": 10}, "data": "tiny"}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(s))
    assert main(["table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| TDC rest (2+1, argmax), end to end | - | 50.0 | 40.0 |" in out
