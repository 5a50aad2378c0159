"""The ``cbedtdc`` console script.

``cbedtdc classify RUN_DIR INPUT... --out preds.csv`` classifies every sample of challenge-layout
HDF5 files (or folders of them) with a trained run: ``RUN_DIR`` is a TDC folder
(``results/tdc``: levels.json, routing.json, level_K/best.pt), the results folder that holds
it, or one flat model folder (``results/flat/ce``). The CSV has one row per sample: key,
predicted space group, the level that kept it, its probability, the top-5 of that level with
probabilities, and the true space group when the file holds one. Bad inputs, files and samples
are listed in ``--rejected`` (key, file, group, reason), never crashed on: a missing path or an
empty folder among good inputs is one rejected row, and the exit code is 2 only when nothing was
classified. Keys are the file's path relative to the input that named it (its name for a file,
the path inside a folder), then ``/<group>``.

``cbedtdc fetch DEST`` downloads the public STEMDL mirror (about 35 GB, 187,156 ``sample-<n>.npz``)
anonymously into DEST, resumably and in parallel, then counts the files of each folder against the
published numbers; type the same command again after an interruption. ``cbedtdc check-download ROOT``
checks a downloaded tree (the mirror, or the SMC 2020 HDF5 files) against the published counts and
names missing or extra files; exit code 2 when anything is wrong.

``cbedtdc table SUMMARY...`` prints the markdown results table of one or more ``summary.json``
files (flat baselines, chance rates, the TDC end to end and estimated), as in docs/results.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cbedtdc.cliutil import inference_parser, known_errors, set_torch_threads
from cbedtdc.errors import InputError

log = logging.getLogger("cbedtdc.cli")

# A known error (the project's own, an OSError; see cliutil.known_errors) logs one line, `TypeName: message`, and the
# command returns 2; anything else, a KeyError or ValueError of a bug included, keeps its traceback.


def _one_line(err: BaseException) -> int:
    log.error("%s: %s", type(err).__name__, " ".join(str(err).split()))
    return 2

def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cbedtdc", description="CBED space-group classification with a "
                                "Trickle-Down Classifier", add_help=add_help)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="classify challenge-layout HDF5 files with a trained run",
                       description=__doc__.split("\n\n")[1], parents=[inference_parser()])
    c.add_argument("run_dir", metavar="RUN_DIR", help="results/tdc, results, or results/flat/<loss> (required)")
    c.add_argument("inputs", metavar="INPUT", nargs="+", help="HDF5 files or folders searched for *.h5 (required)")
    c.add_argument("--out", required=True, help="predictions CSV to write (required)")
    c.add_argument("--rejected", help="CSV of bad files and samples (default: <out>.rejected.csv)")
    c.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    from cbedtdc.fetch import BUCKET, ENDPOINT_URL, PREFIX

    f = sub.add_parser("fetch", help="download the public STEMDL mirror (anonymous S3, resumable, parallel)",
                       description=__doc__.split("\n\n")[2])
    f.add_argument("dest", metavar="DEST", help="folder to download into; point raw_dir at it (required)")
    f.add_argument("--endpoint-url", default=ENDPOINT_URL, help=f"S3 endpoint (default: {ENDPOINT_URL})")
    f.add_argument("--bucket", default=BUCKET, help=f"bucket (default: {BUCKET})")
    f.add_argument("--prefix", default=PREFIX, help=f"key prefix of the mirror (default: {PREFIX})")
    f.add_argument("--workers", type=int, default=16, help="parallel downloads (default: 16)")
    f.add_argument("--folders", nargs="+", metavar="FOLDER",
                   help="only these folders, e.g. validation testing (default: all)")
    f.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    k = sub.add_parser("check-download", help="check a downloaded tree (mirror or SMC 2020 HDF5) against the "
                       "published counts", description=__doc__.split("\n\n")[2])
    k.add_argument("root", metavar="ROOT", help="the downloaded folder (raw_dir) (required)")
    k.add_argument("--samples", action="store_true",
                   help="also open every file: check mirror samples, count HDF5 samples (default: count files)")
    k.add_argument("--expect", nargs="+", default=[], metavar="NAME=N",
                   help="replace a published count, e.g. training=1000 or files=12 train=900 (default: none)")
    k.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    t = sub.add_parser("table", help="markdown results table of summary.json files (e.g. a rest and a hard run)")
    t.add_argument("summaries", metavar="SUMMARY", nargs="+", help="summary.json files (required)")
    t.add_argument("--out", help="write the table here (default: standard output)")
    t.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    return p


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def variants_table(summary: dict, name: str = "") -> str:
    """Markdown table of ``summary["variants"]`` (every flat and TDC variant) and the paired best-vs-best line.

    >>> s = {"variants": [{"name": "flat/ce/cnn", "family": "flat", "balanced_accuracy": 0.5, "top1": 0.6,
    ...       "dev_balanced_accuracy": 0.4, "ci95": {"balanced_accuracy": [0.4, 0.6]},
    ...       "shots": {"many": {"balanced_accuracy": 0.7}, "medium": {"balanced_accuracy": None},
    ...                 "few": {"balanced_accuracy": 0.1}}, "backbone_images": 100, "head_images": 0}],
    ...      "best": {"flat": "flat/ce/cnn", "tdc": None}}
    >>> print(variants_table(s).splitlines()[-1])
    | flat/ce/cnn | 50.0 [40.0, 60.0] | 60.0 | 40.0 | 70.0 | - | 10.0 | 100 | 0 |
    """
    over = (summary.get("bootstrap") or {}).get("over", "materials")
    lines = [f"\nVariants{f' of {name}' if name else ''} (balanced accuracy %, 95 % interval over {over}; "
             "many/medium/few-shot: >100, 20-100, <20 training samples)\n", "",
             "| variant | balanced acc. | top-1 | dev bal. acc. | many | medium | few | backbone images | "
             "head images |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["variants"]:
        lo, hi = (r.get("ci95") or {}).get("balanced_accuracy", [None, None])
        ci = f" [{_pct(lo)}, {_pct(hi)}]" if lo is not None else ""
        shots = r.get("shots", {})
        lines.append(f"| {r['name']} | {_pct(r['balanced_accuracy'])}{ci} | {_pct(r['top1'])} | "
                     f"{_pct(r.get('dev_balanced_accuracy'))} | "
                     + " | ".join(_pct(shots.get(g, {}).get("balanced_accuracy")) for g in ("many", "medium", "few"))
                     + f" | {r.get('backbone_images', '-')} | {r.get('head_images', '-')} |")
    best = summary.get("best") or {}
    if best.get("balanced_accuracy_difference") is not None:
        lo, hi = best["difference_ci95"]
        lines.append(f"\nBest TDC ({best['tdc']}) minus best flat ({best['flat']}), both chosen on dev: "
                     f"{100 * best['balanced_accuracy_difference']:+.1f} points balanced accuracy, paired 95 % "
                     f"interval [{_pct(lo)}, {_pct(hi)}]")
    return "\n".join(lines) + "\n"


def hierarchy_table(summary: dict) -> str:
    """Markdown table of the headline flat model's and TDC's top-1 at every level of the crystallographic
    hierarchy (``summary["flat"/"tdc"]["hierarchy"]``), with 95 % intervals; empty without them.

    >>> s = {"flat": {"model": "flat/ce/crt", "hierarchy": {"crystal_system": {"top1": 0.5, "balanced_accuracy": 0.4,
    ...       "ci95": {"top1": [0.4, 0.6]}}}}, "tdc": {}}
    >>> print(hierarchy_table(s).splitlines()[-1])
    | crystal system | 50.0 [40.0, 60.0] / 40.0 | - |
    """
    flat, tdc = summary.get("flat", {}).get("hierarchy"), summary.get("tdc", {}).get("hierarchy")
    if not flat and not tdc:
        return ""
    from cbedtdc.crystallography import LEVELS

    levels = [lv for lv in LEVELS if lv in (flat or tdc)]  # coarsest first (summary.json sorts its keys)

    def cell(h, level):
        v = (h or {}).get(level)
        if not v:
            return "-"
        lo, hi = (v.get("ci95") or {}).get("top1", [None, None])
        ci = f" [{_pct(lo)}, {_pct(hi)}]" if lo is not None else ""
        return f"{_pct(v['top1'])}{ci} / {_pct(v['balanced_accuracy'])}"

    lines = ["\nCrystallographic hierarchy (top-1 [95 % interval] / balanced accuracy, %)\n", "",
             f"| level | flat ({summary['flat'].get('model', '-')}) | TDC |", "|---|---|---|"]
    lines += [f"| {lv.replace('_', ' ')} | {cell(flat, lv)} | {cell(tdc, lv)} |" for lv in levels]
    return "\n".join(lines) + "\n"


def selective_table(summary: dict) -> str:
    """Markdown lines of the selective prediction of the headline flat model and TDC (``summary["calibration"]``):
    top-1 accuracy when only the most confident 50 %, 80 % or all test samples are answered; empty without it.

    >>> s = {"calibration": {"flat": {"model": "flat/ce/crt", "selective": {"at": {"0.5": 0.9, "0.8": 0.7,
    ...       "1.0": 0.6}}}}}
    >>> print(selective_table(s).splitlines()[-1])
    | flat: flat/ce/crt | 90.0 | 70.0 | 60.0 |
    """
    rows = [(key, c) for key, c in (summary.get("calibration") or {}).items() if c.get("selective")]
    if not rows:
        return ""
    lines = ["\nSelective prediction (top-1 % of the answered samples, most confident first, calibrated confidence)\n",
             "", "| model | 50 % answered | 80 % answered | all |", "|---|---|---|---|"]
    for key, c in rows:
        at = c["selective"]["at"]
        lines.append(f"| {key}: {c.get('model', '-')} | {_pct(at.get('0.5'))} | {_pct(at.get('0.8'))} | "
                     f"{_pct(at.get('1.0'))} |")
    return "\n".join(lines) + "\n"


_SUMMARY_FIX = "give the summary.json of a run (results/metrics/summary.json, rule evaluate), or rerun rule evaluate"


def read_summary(path) -> dict:
    """One ``summary.json`` as a dict; a file that is not JSON or not a JSON object raises :class:`InputError`
    naming the file (a key the tables need is checked as they are drawn, :func:`summary_tables`)."""
    import json

    try:
        summary = json.loads(Path(path).read_text())
    except ValueError as err:
        raise InputError(f"{path}: not JSON ({err}); {_SUMMARY_FIX}") from err
    if not isinstance(summary, dict):
        raise InputError(f"{path}: a JSON {type(summary).__name__}, not an object; {_SUMMARY_FIX}")
    return summary


def _drawn(path, draw) -> str:
    """``draw()``; a missing key raises :class:`InputError` naming the summary file and the key."""
    try:
        return draw()
    except KeyError as err:
        raise InputError(f"{path}: no key {err} in the summary (or one of its entries); {_SUMMARY_FIX}") from err


def summary_tables(summaries, paths) -> str:
    """The Markdown of ``cbedtdc table``: the results of every summary, then each one's variants, hierarchy and
    selective prediction, each table drawn once; a key missing from a summary is named with its file."""
    from cbedtdc.metrics import results_table

    try:
        text = results_table(summaries)
    except KeyError:  # which file: each summary alone (only on this error path)
        for s, p in zip(summaries, paths):
            _drawn(p, lambda s=s: results_table([s]))
        raise
    text += "".join(_drawn(p, lambda s=s, p=p: variants_table(s, str(p)))
                    for s, p in zip(summaries, paths) if s.get("variants"))
    for draw in (hierarchy_table, selective_table):
        text += "".join(_drawn(p, lambda s=s, draw=draw: draw(s)) for s, p in zip(summaries, paths))
    return text


def table(args) -> int:
    try:
        text = summary_tables([read_summary(p) for p in args.summaries], args.summaries)
    except known_errors() as err:
        return _one_line(err)
    if args.out:
        from cbedtdc.io import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def classify(args) -> int:
    from cbedtdc.classify import REJECTED_FIELDS, check_device, check_output, classify_files, prediction_fields
    from cbedtdc.io import write_csv

    try:  # bad arguments fail here, in one line, before the run is loaded or any sample read
        out = check_output(args.out, "--out")
        rej = check_output(args.rejected or out.with_name(out.stem + ".rejected.csv"), "--rejected")
        if rej.absolute() == out.absolute():
            raise InputError(f"--rejected {rej} is the --out file: give another name")
        device = check_device(args.device)
        if args.batch_size < 1:
            raise InputError(f"--batch-size {args.batch_size}: give a positive number of samples (default: 64)")
    except known_errors() as err:
        return _one_line(err)
    set_torch_threads(args.threads)
    try:
        preds, rejected = classify_files(args.run_dir, args.inputs, batch_size=args.batch_size, device=device)
    except known_errors() as err:
        return _one_line(err)
    write_csv(out, preds, prediction_fields())
    write_csv(rej, rejected, REJECTED_FIELDS)
    log.info("%d samples classified -> %s; %d rejected -> %s", len(preds), out, len(rejected), rej)
    if not preds:
        log.error("no sample could be classified (see %s)", rej)
        return 2
    return 0


def fetch(args) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from cbedtdc.fetch import fetch_mirror

    if args.workers < 1:
        log.error("--workers %d: give at least 1", args.workers)
        return 2
    try:
        result = fetch_mirror(args.dest, endpoint_url=args.endpoint_url, bucket=args.bucket, prefix=args.prefix,
                              workers=args.workers, folders=args.folders)
    except known_errors() as err:
        return _one_line(err)
    except (BotoCoreError, ClientError) as err:  # the server's answer (no endpoint, no bucket, access denied)
        _one_line(err)
        log.error("check --endpoint-url %s, --bucket %s, --prefix %s and the network, then type the same command "
                  "again (files already fetched are kept)", args.endpoint_url, args.bucket, args.prefix)
        return 2
    return 0 if result.complete else 2


def check_download_cmd(args) -> int:
    from cbedtdc.fetch import check_download

    try:
        expected = {}
        for item in args.expect:
            name, sep, value = item.partition("=")
            if not sep or not value.isdigit():
                raise InputError(f"--expect {item!r}: give NAME=N, e.g. training=1000")
            expected[name] = int(value)
        problems = check_download(args.root, samples=args.samples, expected=expected or None)
    except known_errors() as err:
        return _one_line(err)
    for line in problems:
        log.error("%s", line)
    if problems:
        return 2
    log.info("%s: complete", args.root)
    return 0


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "classify":
        return classify(args)
    if args.command == "table":
        return table(args)
    if args.command == "fetch":
        return fetch(args)
    if args.command == "check-download":
        return check_download_cmd(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
