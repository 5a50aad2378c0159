"""Every command in README.md and docs/*.md runs as typed: each Snakemake command is dry-run (``-n``) exactly as
written, in its code block's shell (the block's ``export``/array/heredoc lines run first), from a directory laid
out like the repository; every other command is listed below with the reason it is not run here.

What the test changes, and only this: ``snakemake`` and ``.venv/bin/snakemake`` are a wrapper that adds ``-n``;
the placeholder data folders of the docs (``/data/cbed``, ``/scratch/me/cbed``, ``/gpfs/me/cbed``) become a folder
holding one (empty) challenge file per split, which is all a dry run reads; ``my_run.yaml`` is the one docs/hpc.md
shows; ``nohup ... &`` runs in the foreground; ``LSF_PROJECT`` is set.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

BIN = Path(sys.executable).parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDER_DATA = ("/data/cbed", "/scratch/me/cbed", "/gpfs/me/cbed")
PLACEHOLDER_MIRROR = "/data/stemdl"  # a STEMDL mirror layout of empty placeholders

#: Commands that are not run, by the start of the command: (pattern, reason).
NOT_RUN = [
    (r"make run\b", "the whole default pipeline (minutes of training); tests/test_pipeline*.py run it at tiny size"),
    (r"make test\b", "the test suite itself"),
    (r"make report\b", "needs a finished run (its results/run_config.yaml); tests/workflow/test_report.py"),
    (r"(\S+/)?snakemake .*--configfile results/run_config\.yaml", "what `make report` runs: needs a finished run"),
    (r"(\S+/)?snakemake .*--report ", "writes the report of a finished run; tests/workflow/test_report.py"),
    (r"(\S+/)?snakemake\b.*(<|\.\.\.|\bNAME\b|--cores N\b)", "a placeholder, not a command (the text says what to put)"),
    (r"(\S+/)?cbedtdc classify ", "needs trained models; tests/unit/test_classify.py runs it"),
    (r"cbedtdc table ", "needs the summary files of finished runs"),
    (r"(\S+/)?cbedtdc (fetch|check-download) ", "downloads or reads the real data; tests/unit/test_fetch.py runs both "
     "against a local S3 server"),
    (r"(PYTHONPATH=\S+ )?(\S+/)?python3? workflow_scripts/", "one rule's CLI by hand: needs shards; the rule runs it "
     "(tests/workflow/test_pipeline_physics.py) and tests/unit/features/test_symmetry.py its library"),
    (r"(\S+/)?python3? bench/", "a benchmark (minutes of CPU), not a test"),
    (r"mpiexec -n \d+ python workflow_scripts/train\.py", "trains a model; tests/unit/train/test_engine.py runs this CLI"),
    (r"(\S+=\S+ )*bsub ", "LSF submission; tests/workflow/test_profiles.py runs submit.lsf through a fake bsub"),
    (r"sbatch ", "what the SLURM plugin submits, shown as output; tests/workflow/test_slurm.py submits for real"),
    (r"git clone ", "installation on a cluster"),
    (r"module load ", "installation on a cluster (site modules)"),
    (r"python3 -m venv ", "installation on a cluster"),
    (r"(MPICC=\$\(which mpicc\) )?\.venv/bin/pip ", "installation on a cluster"),
    (r"grep -v -E .*pip install", "installation on a cluster"),
]
#: Lines that prepare the shell of their block and run as written.
SETUP = re.compile(r"(export \w+=|OV=\(|cat > \S+ <<|mkdir -p )")
SNAKEMAKE = re.compile(r"(nohup )?(\.venv/bin/)?snakemake(\s|$)")
COMMAND_START = re.compile(r"(\.venv/bin/|\S+=\S+ )*(snakemake|make|cbedtdc|python3?|mpiexec|export|git|module|bsub|"
                           r"sbatch|nohup|OV=|cat >)\b")


@dataclass
class Command:
    where: str  # file:line
    text: str  # one logical command line, as typed (continuations joined)
    setup: list  # the block's setup lines before it


def logical_lines(body: str):
    """(line number offset, text) of each command of a code block: ``\\`` continuations joined, heredocs kept
    whole, comment-only and blank lines left out."""
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        heredoc = re.search(r"<<-?'?(\w+)'?", text)
        if heredoc:
            end = heredoc.group(1)
            while i + 1 < len(lines) and lines[i].strip() != end:
                i += 1
                text += "\n" + lines[i]
        i += 1
        if text.strip() and not text.strip().startswith("#"):
            yield start, text.strip()


def doc_commands() -> list[Command]:
    out = []
    for path in DOCS:
        text = path.read_text()
        name = path.relative_to(REPO).as_posix()
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            lang, body = m.group(1), m.group(2)
            first = next((t for _, t in logical_lines(body)), "")
            if lang not in ("bash", "sh", "shell") and not (lang == "" and COMMAND_START.match(first)):
                continue  # yaml, python, program output
            line0 = text[: m.start(2)].count("\n") + 1
            setup = []
            for offset, cmd in logical_lines(body):
                if SETUP.match(cmd):
                    setup.append(cmd)
                    continue
                out.append(Command(f"{name}:{line0 + offset}", cmd, list(setup)))
        prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
        for m in re.finditer(r"`([^`]+)`", prose):
            span = " ".join(m.group(1).split())
            if SNAKEMAKE.match(span):
                out.append(Command(f"{name}:{prose[: m.start()].count(chr(10)) + 1}", span, []))
    return out


def reason_not_run(cmd: str) -> str | None:
    """The reason a command is not run (NOT_RUN), matched on the command without its trailing comment."""
    try:
        bare = shlex.join(shlex.split(cmd.splitlines()[0], comments=True))
    except ValueError:
        bare = cmd
    bare = bare.replace("'", "")
    for pattern, reason in NOT_RUN:
        if re.match(pattern, bare):
            return reason
    return None


COMMANDS = doc_commands()
TO_RUN = list({(c.text.split("  #")[0].strip(), tuple(c.setup)): c for c in reversed(COMMANDS)
               if SNAKEMAKE.match(c.text) and reason_not_run(c.text) is None}.values())[::-1]


def test_every_command_is_dry_run_or_listed_with_a_reason():
    assert len(TO_RUN) >= 15, [c.text for c in TO_RUN]
    unlisted = [f"{c.where}: {c.text}" for c in COMMANDS
                if not SNAKEMAKE.match(c.text) and reason_not_run(c.text) is None]
    assert not unlisted, "commands neither dry-run nor listed in NOT_RUN (add a reason):\n" + "\n".join(unlisted)
    # the docs' science commands (targets after --configfile were read as config files once)
    assert any("config/science.yaml" in c.text for c in TO_RUN)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory laid out like the repository root, with a dry-running snakemake where the docs call it."""
    wd = tmp_path_factory.mktemp("docs")
    for name in ("Snakefile", "rules", "config", "workflow_scripts", "report", "envs", "profiles", "local", "slurm",
                 "slurm-cpu", "summit", "summit-batch"):
        (wd / name).symlink_to(REPO / name)
    wrapper = wd / ".venv" / "bin" / "snakemake"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(str(BIN / "snakemake"))} -n "$@"\n')
    wrapper.chmod(0o755)
    data = wd / "data_cbed"
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"batch_{split}_0.h5").write_bytes(b"")
    from fixtures import write_placeholder_mirror

    write_placeholder_mirror(wd / "data_stemdl", {"training": 3, "validation": 2, "testing": 2, "inference": 1})
    # my_run.yaml: the one docs/hpc.md shows (its yaml block with raw_dir)
    hpc = (REPO / "docs" / "hpc.md").read_text()
    block = next(b for b in re.findall(r"^```yaml\n(.*?)^```", hpc, re.S | re.M) if "raw_dir:" in b)
    (wd / "my_run.yaml").write_text(block)
    return wd


def as_run(cmd: Command, data: Path) -> str:
    """The block's setup lines and the command, with the placeholder data folders and nohup/& replaced."""
    text = "\n".join([*cmd.setup, cmd.text])
    text = text.replace(PLACEHOLDER_MIRROR, str(data.parent / "data_stemdl"))
    for placeholder in PLACEHOLDER_DATA:
        text = text.replace(placeholder, str(data))
    if cmd.text.startswith("nohup "):
        text = re.sub(r"nohup (.*?)\s*&(\s*#.*)?$", r"\1", text, flags=re.S)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("cmd", TO_RUN, ids=[f"{c.where} {c.text[:60]}" for c in TO_RUN])
def test_snakemake_command_dry_runs_as_typed(cmd, workdir):
    my_run = (workdir / "my_run.yaml").read_text()
    (workdir / "my_run.yaml").write_text(as_run(Command("", my_run, []), workdir / "data_cbed"))
    env = dict(os.environ, PATH=f"{workdir / '.venv' / 'bin'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
               LSF_PROJECT="ABC123")
    script = "set -e\n" + as_run(cmd, workdir / "data_cbed")
    res = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    log = workdir / "run.log"  # where the nohup command sends its output
    out = res.stdout + res.stderr + (log.read_text() if cmd.text.startswith("nohup ") else "")
    assert res.returncode == 0, f"{cmd.where}: `{cmd.text}` failed:\n{out[-3000:]}"
    assert "Error" not in out and ("Job stats:" in out or "Nothing to be done" in out or "--unlock" in cmd.text), \
        f"{cmd.where}: `{cmd.text}`:\n{out[-3000:]}"
