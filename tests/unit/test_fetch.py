"""``cbedtdc fetch`` against a local S3-compatible server (moto's server mode, started here: no network beyond
localhost), and ``cbedtdc check-download`` on mirror and SMC 2020 trees."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO
from fixtures import make_sample, write_challenge_file, write_npz_sample, write_placeholder_challenge

from cbedtdc.cli import main
from cbedtdc.fetch import FETCHED, LISTING, check_download, fetch_mirror, s3_client

BUCKET, PREFIX = "sciml-datasets", "ms/stemdl_ds1a"
SMALL = {"training": 6, "validation": 3, "testing": 2, "inference": 2}


@pytest.fixture(scope="module")
def moto_server():
    """A moto S3 server (moto's server mode, in a thread) on a free localhost port."""
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(moto_server):
    """The endpoint URL of the moto server."""
    host, port = moto_server.get_host_and_port()
    return f"http://{host}:{port}"


def writer(url):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


@pytest.fixture
def mirror(server, tmp_path):
    """A small mirror served under s3://sciml-datasets/<unique prefix>/; returns (prefix, {rel: bytes})."""
    s3 = writer(server)
    if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=BUCKET)
    prefix = f"{PREFIX}/{tmp_path.name}"  # one mirror per test on the shared server
    rng = np.random.default_rng(0)
    content, n = {}, 0
    for folder, count in SMALL.items():
        for _ in range(count):
            path = write_npz_sample(tmp_path / "src" / f"sample-{n}.npz",
                                    rng.uniform(0, 255, (3, 8, 8)).astype(np.float32), int(rng.integers(1, 231)))
            rel = f"{folder}/sample-{n}.npz"
            content[rel] = path.read_bytes()
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{rel}", Body=content[rel], ACL="public-read")
            n += 1
    return prefix, content


def stats(dest, rels):
    return {r: (os.stat(dest / r).st_ino, os.stat(dest / r).st_mtime_ns) for r in rels}


def test_fetch_downloads_the_mirror_anonymously_and_a_second_run_fetches_nothing(server, mirror, tmp_path, caplog):
    prefix, content = mirror
    dest = tmp_path / "dest"
    caplog.set_level("INFO")
    args = ["fetch", str(dest), "--endpoint-url", server, "--prefix", prefix, "--workers", "4"]
    assert main(args) == 0
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("sample-*.npz")} == content
    assert "training: 6 sample-<n>.npz files, expected 148,006 (148000 missing)" in caplog.text  # published counts
    before = stats(dest, content)
    caplog.clear()
    assert main(args) == 0
    assert stats(dest, content) == before  # nothing fetched twice
    assert "13 already complete, 0 to fetch" in caplog.text
    assert check_download(dest, expected=SMALL) == []
    assert main(["check-download", str(dest), "--samples", "--expect", *[f"{k}={v}" for k, v in SMALL.items()]]) == 2
    assert "13 unreadable or bad sample files" in caplog.text  # 8 px test files: not the mirror's 128 px


def test_an_interrupted_fetch_resumes_without_touching_completed_files(server, mirror, tmp_path):
    prefix, content = mirror
    dest = tmp_path / "dest"
    client = s3_client(server, workers=1, attempts=1)
    calls = []

    def network_gone(**_):  # the connection drops after 5 downloads
        calls.append(1)
        if len(calls) > 5:
            raise ConnectionError("injected: connection reset")

    client.meta.events.register("before-call.s3.GetObject", network_gone)
    first = fetch_mirror(dest, endpoint_url=server, prefix=prefix, workers=1, client=client, expected=SMALL,
                         retries=1)
    assert len(first.fetched) == 5 and len(first.failed) == 8 and not first.complete
    assert len(calls) == 5 + 8 * 2  # each failed file was tried twice
    assert all("injected: connection reset" in why for why in first.failed.values())
    assert any("missing or incomplete" in p for p in first.problems)
    assert check_download(dest, expected=SMALL)  # the check sees the hole too
    done = first.fetched
    assert not list(dest.rglob(".*.part"))  # nothing half-written under any name
    # what a SIGKILL leaves: a partial temp file, and a final-named file of the wrong size from another tool
    pending = sorted(first.failed)
    partial = dest / pending[0]
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.with_name(f".{partial.name}.part").write_bytes(content[pending[0]][:100])
    (dest / pending[1]).write_bytes(content[pending[1]][:-7])
    before = stats(dest, done)
    second = fetch_mirror(dest, endpoint_url=server, prefix=prefix, workers=3, expected=SMALL)
    assert second.complete and sorted(second.fetched) == pending and sorted(second.skipped) == sorted(done)
    assert stats(dest, done) == before  # completed files untouched: same inode, same mtime
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("sample-*.npz")} == content
    assert not list(dest.rglob(".*.part"))
    assert len((dest / FETCHED).read_text().splitlines()) == 13 and (dest / LISTING).exists()


def test_a_fetch_killed_mid_file_resumes_without_touching_completed_files(moto_server, server, mirror, tmp_path):
    """SIGKILL of the fetch process while a file is half received, then the same command again."""
    prefix, content = mirror
    order = sorted(content)  # S3 lists keys in order; one worker fetches them in that order
    slow = order[5]
    big = write_npz_sample(tmp_path / "big.npz", np.random.default_rng(1).uniform(0, 255, (3, 512, 512)).astype(
        np.float32), 14)  # 3 MiB: the first 1 MiB read reaches the disk before the stall
    content[slow] = big.read_bytes()
    writer(server).put_object(Bucket=BUCKET, Key=f"{prefix}/{slow}", Body=content[slow], ACL="public-read")
    half_sent = threading.Event()
    app = moto_server._server.app

    def stalling(environ, start_response):  # the server sends half of one file, then stalls
        body = app(environ, start_response)
        if environ["REQUEST_METHOD"] != "GET" or not environ["PATH_INFO"].endswith(f"{prefix}/{slow}"):
            return body
        data = b"".join(body)

        def chunks():
            yield data[: len(data) // 2]
            half_sent.set()
            time.sleep(30)
            yield data[len(data) // 2:]
        return chunks()

    dest = tmp_path / "dest"
    cmd = [sys.executable, "-m", "cbedtdc.cli", "fetch", str(dest), "--endpoint-url", server, "--prefix", prefix,
           "--workers", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    moto_server._server.app = stalling
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert half_sent.wait(60), "the fetch never reached the stalling file"
        part = (dest / slow).with_name(f".{(dest / slow).name}.part")
        deadline = time.monotonic() + 20
        while (not part.exists() or part.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no cleanup at all
        proc.wait(30)
    finally:
        moto_server._server.app = app
    assert 0 < part.stat().st_size < len(content[slow])  # a partial file under the temporary name only
    assert not (dest / slow).exists()
    done = order[:5]
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("sample-*.npz")) == done
    before = stats(dest, done)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "5 already complete, 8 to fetch" in res.stderr
    assert stats(dest, done) == before  # completed files untouched: same inode, same mtime
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("sample-*.npz")} == content
    assert not part.exists()


def test_a_changed_remote_file_is_fetched_again_and_a_foreign_copy_is_kept_when_its_md5_matches(server, mirror,
                                                                                                 tmp_path):
    prefix, content = mirror
    dest = tmp_path / "dest"
    rel = "validation/sample-6.npz"
    (dest / "validation").mkdir(parents=True)
    (dest / rel).write_bytes(content[rel])  # e.g. from `aws s3 sync`: no record of ours
    foreign = stats(dest, [rel])
    result = fetch_mirror(dest, endpoint_url=server, prefix=prefix, workers=2, expected=SMALL)
    assert result.complete and rel in result.skipped and stats(dest, [rel]) == foreign
    changed = bytearray(content[rel])
    changed[-30] ^= 0xFF  # same size, other content: another ETag
    writer(server).put_object(Bucket=BUCKET, Key=f"{prefix}/{rel}", Body=bytes(changed), ACL="public-read")
    again = fetch_mirror(dest, endpoint_url=server, prefix=prefix, workers=2, expected=SMALL)
    assert again.fetched == [rel] and (dest / rel).read_bytes() == bytes(changed)


def test_fetch_of_an_empty_prefix_says_what_to_check(server, tmp_path, caplog):
    writer(server).create_bucket(Bucket="empty-bucket")
    assert main(["fetch", str(tmp_path / "d"), "--endpoint-url", server, "--bucket", "empty-bucket"]) == 2
    assert "holds no object" in caplog.text and "--prefix" in caplog.text


# --------------------------------------------------------------------------- check-download without a listing
def test_check_download_of_a_mirror_names_missing_counts_and_stray_files(tmp_path):
    for n, folder in enumerate(["training", "training", "validation", "testing", "inference"]):
        write_npz_sample(tmp_path / folder / f"sample-{n}.npz", np.zeros((3, 128, 128), np.float32), 14)
    (tmp_path / "training" / ".sample-9.npz.part").write_bytes(b"half")
    problems = check_download(tmp_path, expected={"training": 3, "validation": 1, "testing": 1, "inference": 1})
    assert problems == ["training: 2 sample-<n>.npz files, expected 3 (1 missing)",
                        "1 files that are not sample-<n>.npz: training/.sample-9.npz.part"]
    assert check_download(tmp_path)[0] == "training: 2 sample-<n>.npz files, expected 148,006 (148004 missing)"


def test_check_download_of_the_hdf5_layout_counts_files_and_on_request_samples(tmp_path, caplog):
    root = write_placeholder_challenge(tmp_path / "smc", n_files=20)
    (root / "train" / "batch_train_3.h5").unlink()
    problems = check_download(root, expected={"files": 20})
    assert problems[0] == "19 batch_*.h5 files, expected 20 (1 missing)"
    assert problems[1] == "1 gaps in the batch_<split>_<N> numbering (missing files?): batch_train_3.h5"
    assert problems[2].startswith("19 empty files: ")
    assert main(["check-download", str(root)]) == 2 and "expected 1,138" in caplog.text

    real = tmp_path / "real"
    rng = np.random.default_rng(0)
    for split, n in {"train": 3, "dev": 1, "test": 2}.items():
        write_challenge_file(real / split / f"batch_{split}_0.h5",
                             [make_sample(f"sample_{i}_0", 14, f"mp-{i}", side=8, rng=rng) for i in range(n)])
    assert check_download(real, samples=True, expected={"files": 3, "train": 3, "dev": 1, "test": 2}) == []
    assert check_download(real, samples=True, expected={"files": 3, "train": 4, "dev": 1, "test": 2}) == [
        "train: 3 samples, expected 4"]
