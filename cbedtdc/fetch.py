"""Download the public STEMDL mirror, and check a downloaded tree (``cbedtdc fetch``, ``cbedtdc check-download``).

:func:`fetch_mirror` copies every object below ``s3://<bucket>/<prefix>/`` of an S3-compatible endpoint
into a folder, anonymously (boto3 with unsigned requests), with a pool of threads. It resumes:

- the remote listing is saved as ``.stemdl_listing.tsv`` and every completed file is appended to
  ``.stemdl_fetched.tsv`` (path, size, ETag); a file whose size and recorded ETag equal the remote
  ones is never fetched again (a file of the same size without a record, e.g. from ``aws s3 sync``,
  is kept when its MD5 equals a single-part ETag);
- a file is written as ``.<name>.part`` in its folder and renamed when complete, so a file under its
  final name is whole; a partial ``.part`` left by a killed run is fetched again from the start
  (mirror files are ~200 KB), and a final-named file of the wrong size is fetched again.

Progress is logged every few seconds; at the end the files of each folder are counted against the
published numbers (:data:`MIRROR_COUNTS`) and against the remote listing (missing and extra files
named). :func:`check_download` checks a tree without the network: the mirror layout against those
counts (and the saved listing), or the SMC 2020 HDF5 layout against its 1,138 files and, when asked,
its sample counts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from cbedtdc.layout import MIRROR_SAMPLE, MIRROR_SPLITS, RAW_NAME, SPLITS, discover_raw, is_mirror
from cbedtdc.errors import InputError

__all__ = ["ENDPOINT_URL", "BUCKET", "PREFIX", "MIRROR_COUNTS", "CHALLENGE_FILES", "CHALLENGE_SAMPLES", "LISTING",
           "FETCHED", "RemoteObject", "FetchResult", "s3_client", "list_remote", "fetch_mirror", "check_download",
           "count_mirror"]

log = logging.getLogger(__name__)

#: Where the MLCommons STEMDL mirror is published (mlcommons/science benchmarks/stemdl/stfc/README.md).
ENDPOINT_URL = "https://s3.echo.stfc.ac.uk"
BUCKET = "sciml-datasets"
PREFIX = "ms/stemdl_ds1a"
#: Published files per mirror folder.
MIRROR_COUNTS = {"training": 148_006, "validation": 20_401, "testing": 9_374, "inference": 9_375}
#: The SMC 2020 challenge set (doi 10.13139/OLCF/1510313): HDF5 files, and samples per split.
CHALLENGE_FILES = 1_138
CHALLENGE_SAMPLES = {"train": 148_006, "dev": 20_400, "test": 18_749}
#: Remote listing saved by fetch, and the log of completed files (tab-separated: path, size, ETag).
LISTING = ".stemdl_listing.tsv"
FETCHED = ".stemdl_fetched.tsv"
_SHOWN = 10  # file names shown per problem line


@dataclass(frozen=True)
class RemoteObject:
    key: str  # the object key
    rel: str  # its path below the prefix (and below the destination folder)
    size: int
    etag: str  # without quotes


@dataclass
class FetchResult:
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # rel -> reason
    problems: list[str] = field(default_factory=list)  # count / listing comparison lines
    bytes: int = 0

    @property
    def complete(self) -> bool:
        return not self.failed and not self.problems


def s3_client(endpoint_url: str = ENDPOINT_URL, *, workers: int = 16, attempts: int = 5):
    """An anonymous (unsigned) boto3 S3 client with a connection per worker and retries."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(signature_version=UNSIGNED, max_pool_connections=max(10, workers),
                    retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=30, read_timeout=120)
    return boto3.client("s3", endpoint_url=endpoint_url, config=config, region_name="us-east-1")


def list_remote(client, bucket: str = BUCKET, prefix: str = PREFIX) -> list[RemoteObject]:
    """Every object below ``prefix/`` (one paginated listing: 1,000 keys a request)."""
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            if not rel or rel.endswith("/"):
                continue  # the prefix itself, folder markers
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise InputError(f"s3://{bucket}/{obj['Key']}: key escapes the destination folder")
            out.append(RemoteObject(obj["Key"], rel, int(obj["Size"]), obj["ETag"].strip('"')))
    return out


def _read_table(path: Path) -> dict[str, tuple[int, str]]:
    """rel -> (size, etag) of a listing or fetched log; a torn last line (killed writer) is ignored."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                out[parts[0]] = (int(parts[1]), parts[2])
    return out


def _write_listing(dest: Path, objects) -> None:
    from cbedtdc.io import atomic_write_text

    atomic_write_text(dest / LISTING, "".join(f"{o.rel}\t{o.size}\t{o.etag}\n" for o in objects))


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _plain_md5(etag: str) -> bool:
    """A single-part upload's ETag is the MD5 of the content (a multipart one ends in -<parts>)."""
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower())


def _is_complete(path: Path, obj: RemoteObject, done: dict) -> tuple[bool, bool]:
    """(complete, to_record): is the local ``path`` the remote ``obj`` already?"""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False, False
    if size != obj.size:
        return False, False
    if obj.rel in done:
        return done[obj.rel] == (obj.size, obj.etag), False
    if _plain_md5(obj.etag):  # a file of another tool: keep it when its content is the remote one
        return _md5(path) == obj.etag.lower(), True
    return True, True  # multipart ETag, no record: the size is all there is to compare


def _download(client, bucket: str, obj: RemoteObject, path: Path) -> int:
    """One object to ``path`` through ``.<name>.part`` (renamed when complete); the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    body = client.get_object(Bucket=bucket, Key=obj.key)["Body"]
    h = hashlib.md5(usedforsecurity=False)
    n = 0
    try:
        with open(part, "wb") as fh:  # "wb": a partial file of a killed run is started again
            while chunk := body.read(1 << 20):
                fh.write(chunk)
                h.update(chunk)
                n += len(chunk)
        if n != obj.size:
            raise OSError(f"got {n} bytes, the listing says {obj.size}")
        if _plain_md5(obj.etag) and h.hexdigest() != obj.etag.lower():
            raise OSError(f"MD5 {h.hexdigest()} differs from the ETag {obj.etag}")
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        body.close()
    return n


def _download_retrying(client, bucket: str, obj: RemoteObject, path: Path, retries: int) -> int:
    """:func:`_download`, tried again ``retries`` times (a connection dropped mid-body is not retried by botocore)."""
    for attempt in range(retries + 1):
        try:
            return _download(client, bucket, obj, path)
        except Exception as err:
            if attempt == retries:
                raise
            log.debug("%s: %s; trying again", obj.rel, err)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _download_all(client, bucket, dest: Path, todo, records, result, *, workers, retries, progress_s) -> None:
    """Fetch ``todo`` in a thread pool into ``dest``, journalling every complete file (and the ``records`` found
    complete locally) in ``dest/FETCHED``; failures are named in ``result.failed``, progress logged."""
    total = sum(o.size for o in todo)
    lock = threading.Lock()
    with open(dest / FETCHED, "a") as journal:
        def record_done(obj):
            with lock:
                journal.write(f"{obj.rel}\t{obj.size}\t{obj.etag}\n")
                journal.flush()

        for obj in records:
            record_done(obj)
        start = last = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {pool.submit(_download_retrying, client, bucket, o, dest / o.rel, retries): o for o in todo}
            for fut in as_completed(futures):
                obj = futures[fut]
                try:
                    result.bytes += fut.result()
                except Exception as err:  # network, server, disk: named, the rest goes on
                    reason = " ".join(str(err).split()) or type(err).__name__
                    log.warning("failed %s: %s", obj.rel, reason)
                    result.failed[obj.rel] = reason
                    continue
                record_done(obj)
                result.fetched.append(obj.rel)
                now = time.monotonic()
                if now - last >= progress_s:
                    last = now
                    rate = result.bytes / max(now - start, 1e-9)
                    left = total - result.bytes
                    log.info("fetched %d/%d files, %.1f/%.1f MB, %.1f MB/s, about %.0f min left",
                             len(result.fetched), len(todo), result.bytes / 1e6, total / 1e6, rate / 1e6,
                             left / max(rate, 1) / 60)


def fetch_mirror(dest, *, endpoint_url: str = ENDPOINT_URL, bucket: str = BUCKET, prefix: str = PREFIX,
                 workers: int = 16, folders=None, client=None, expected=None, retries: int = 2,
                 progress_s: float = 10.0) -> FetchResult:
    """Download (or complete) the mirror below ``s3://bucket/prefix/`` into ``dest``.

    Parameters
    ----------
    dest : path-like
        Destination root; gets ``training/``, ``validation/``, ... as on the server.
    endpoint_url, bucket, prefix : str
        Where the mirror is (defaults: the published STEMDL mirror).
    workers : int
        Parallel downloads (threads).
    folders : iterable of str, optional
        Fetch only these top-level folders (default: everything below the prefix).
    client : optional
        A boto3 S3 client to use (default: :func:`s3_client` of ``endpoint_url``).
    expected : dict, optional
        Files per folder to compare with (default :data:`MIRROR_COUNTS`, for the folders fetched).
    retries : int
        Further tries of a file that failed (besides botocore's own retries of a request).

    Returns
    -------
    FetchResult
        Fetched, skipped and failed files, and ``problems``: files of the listing still missing
        locally and local files the listing does not have (named), which make ``complete`` false.
        Counts that differ from ``expected`` only log a warning (the listing is what the server holds).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    client = client or s3_client(endpoint_url, workers=workers)
    log.info("listing s3://%s/%s at %s", bucket, prefix.strip("/"), endpoint_url)
    objects = list_remote(client, bucket, prefix)
    if folders:
        wanted = set(folders)
        objects = [o for o in objects if o.rel.split("/")[0] in wanted]
    if not objects:
        raise FileNotFoundError(f"s3://{bucket}/{prefix.strip('/')}/ at {endpoint_url} holds no object"
                                + (f" in {', '.join(sorted(folders))}" if folders else "")
                                + ": check --endpoint-url, --bucket and --prefix")
    _write_listing(dest, objects)
    done = _read_table(dest / FETCHED)
    result = FetchResult()
    todo, records = [], []
    for obj in objects:
        complete, record = _is_complete(dest / obj.rel, obj, done)
        if complete:
            result.skipped.append(obj.rel)
            if record:
                records.append(obj)
        else:
            todo.append(obj)
    total = sum(o.size for o in todo)
    log.info("%d objects (%.1f MB): %d already complete, %d to fetch (%.1f MB) with %d threads",
             len(objects), sum(o.size for o in objects) / 1e6, len(result.skipped), len(todo), total / 1e6, workers)
    _download_all(client, bucket, dest, todo, records, result, workers=workers, retries=retries,
                  progress_s=progress_s)
    log.info("fetched %d files (%.1f MB), %d were complete, %d failed", len(result.fetched), result.bytes / 1e6,
             len(result.skipped), len(result.failed))
    fetched_folders = sorted({o.rel.split("/")[0] for o in objects} & set(MIRROR_COUNTS))
    want = expected or {f: MIRROR_COUNTS[f] for f in fetched_folders}
    for line in _count_lines(count_mirror(dest, want), want):
        log.warning("%s", line)
    result.problems = _listing_problems(dest, {o.rel: (o.size, o.etag) for o in objects})
    for line in result.problems:
        log.error("%s", line)
    if result.failed or result.problems:
        log.error("the download is incomplete: rerun the same command to fetch what is missing")
    return result


# --------------------------------------------------------------------------- checks
def count_mirror(root, folders=MIRROR_COUNTS) -> dict[str, int]:
    """``sample-<n>.npz`` files per mirror folder (one listing each; a missing folder counts 0)."""
    out = {}
    for folder in folders:
        path = Path(root) / folder
        if not path.is_dir():
            out[folder] = 0
            continue
        with os.scandir(path) as it:
            out[folder] = sum(1 for e in it if MIRROR_SAMPLE.match(e.name))
    return out


def _names(items) -> str:
    items = sorted(items)
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _count_lines(counts: dict, expected: dict) -> list[str]:
    """One line per folder whose count differs from the expected one, and one summary line."""
    lines = []
    for folder, want in expected.items():
        have = counts.get(folder, 0)
        log.info("%s: %d sample files (expected %d)", folder, have, want)
        if have != want:
            what = f"{want - have} missing" if have < want else f"{have - want} extra"
            lines.append(f"{folder}: {have:,} sample-<n>.npz files, expected {want:,} ({what})")
    return lines


def _listing_problems(root: Path, listing: dict) -> list[str]:
    """Files of a saved listing missing (or of another size) under ``root``, and sample files it lacks."""
    problems = []
    missing = [rel for rel, (size, _) in listing.items()
               if not (root / rel).is_file() or (root / rel).stat().st_size != size]
    if missing:
        problems.append(f"{len(missing)} files of the server's listing missing or incomplete: {_names(missing)}")
    listed_folders = {rel.split("/")[0] for rel in listing}
    extra = []
    for folder in sorted(listed_folders & set(MIRROR_SPLITS)):
        if not (root / folder).is_dir():
            continue  # all of it is missing, named above
        with os.scandir(root / folder) as it:
            extra += [f"{folder}/{e.name}" for e in it if f"{folder}/{e.name}" not in listing]
    if extra:
        problems.append(f"{len(extra)} files the server's listing does not hold: {_names(extra)}")
    return problems


def _check_mirror(root: Path, samples: bool, expected) -> list[str]:
    expected = expected or MIRROR_COUNTS
    problems = _count_lines(count_mirror(root, expected), expected)
    listing = _read_table(root / LISTING)
    if listing:
        log.info("comparing with the server's listing saved by cbedtdc fetch (%d files)", len(listing))
        problems += _listing_problems(root, listing)
    else:
        odd = []
        for folder in expected:
            if (root / folder).is_dir():
                with os.scandir(root / folder) as it:
                    odd += [f"{folder}/{e.name}" for e in it if not MIRROR_SAMPLE.match(e.name)]
        if odd:
            problems.append(f"{len(odd)} files that are not sample-<n>.npz: {_names(odd)}")
    if samples:
        from cbedtdc.mirror import read_npz

        bad = []
        for folder in expected:
            if (root / folder).is_dir():
                with os.scandir(root / folder) as it:
                    names = sorted(e.name for e in it if MIRROR_SAMPLE.match(e.name))
                for name in names:
                    reason = read_npz(root / folder / name)[2]
                    if reason:
                        bad.append(f"{folder}/{name} ({reason})")
        if bad:
            problems.append(f"{len(bad)} unreadable or bad sample files: {_names(bad)}")
    return problems


def _check_challenge(root: Path, samples: bool, expected) -> list[str]:
    expected = {"files": CHALLENGE_FILES, **CHALLENGE_SAMPLES, **(expected or {})}
    problems = []
    files = discover_raw(root)
    per_split = {s: sorted(int(RAW_NAME.match(p.name).group(2)) for p in files.values()
                           if RAW_NAME.match(p.name).group(1) == s) for s in SPLITS}
    log.info("%d HDF5 files (expected %d): %s", len(files), expected["files"],
             ", ".join(f"{s} {len(v)}" for s, v in per_split.items()))
    if len(files) != expected["files"]:
        diff = expected["files"] - len(files)
        what = f"{diff} missing" if diff > 0 else f"{-diff} extra"
        problems.append(f"{len(files):,} batch_*.h5 files, expected {expected['files']:,} ({what})")
    gaps = [f"batch_{s}_{n}.h5" for s, ranks in per_split.items() if ranks
            for n in sorted(set(range(ranks[-1] + 1)) - set(ranks))]
    if gaps:
        problems.append(f"{len(gaps)} gaps in the batch_<split>_<N> numbering (missing files?): {_names(gaps)}")
    empty = [p.relative_to(root).as_posix() for p in files.values() if p.stat().st_size == 0]
    if empty:
        problems.append(f"{len(empty)} empty files: {_names(empty)}")
    if samples:
        import h5py

        counts = dict.fromkeys(SPLITS, 0)
        bad = []
        for stem, path in files.items():
            try:
                with h5py.File(path, "r") as fh:
                    counts[RAW_NAME.match(path.name).group(1)] += sum(1 for k in fh if k.startswith("sample_"))
            except Exception as err:
                bad.append(f"{path.relative_to(root).as_posix()} ({' '.join(str(err).split())})")
        log.info("samples: %s", ", ".join(f"{s} {n}" for s, n in counts.items()))
        for split in SPLITS:
            if counts[split] != expected[split]:
                problems.append(f"{split}: {counts[split]:,} samples, expected {expected[split]:,}")
        if bad:
            problems.append(f"{len(bad)} files that cannot be read: {_names(bad)}")
    return problems


def check_download(root, *, samples: bool = False, expected=None) -> list[str]:
    """Problems of a downloaded tree (empty when it is complete), each a line naming the files.

    The STEMDL mirror layout (:func:`cbedtdc.layout.is_mirror`): ``sample-<n>.npz`` files per folder
    against :data:`MIRROR_COUNTS`, and against the listing ``cbedtdc fetch`` saved when there is one
    (missing and extra files named). The SMC 2020 layout (``batch_{train,dev,test}_N.h5``): the number
    of files against :data:`CHALLENGE_FILES`, gaps in each split's numbering and empty files named.
    Only with ``samples`` is any file opened: mirror files are read and checked, HDF5 files' sample
    groups counted against :data:`CHALLENGE_SAMPLES`. ``expected`` replaces published numbers (mirror
    folder names; ``files``, ``train``, ``dev``, ``test`` for the HDF5 layout).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    if is_mirror(root):
        log.info("%s: STEMDL mirror layout", root)
        return _check_mirror(root, samples, expected)
    log.info("%s: SMC 2020 HDF5 layout", root)
    return _check_challenge(root, samples, expected)
