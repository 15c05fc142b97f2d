"""The Dockerfiles build from this repository: every COPY / ADD source exists in the build context.

The machines here have no Docker daemon, so the images are not built in CI; this catches the common
way a Dockerfile rots (a file moved or renamed). The build context is the repository root, as
``docker/README.md`` documents (``docker build -f docker/<file> .``).
"""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest

from testlib import REPO

DOCKERFILES = sorted(p for p in (REPO / "docker").iterdir() if p.name.startswith("Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _copy_sources(args: str) -> list[str] | None:
    """The sources of a COPY / ADD (``None`` for ``--from=`` copies out of another stage or image)."""
    if args.startswith("["):
        import json

        parts = json.loads(args)
    else:
        parts = shlex.split(args)
    flags = [p for p in parts if p.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    paths = [p for p in parts if not p.startswith("--")]
    return paths[:-1]


def test_there_are_dockerfiles_and_a_readme():
    assert DOCKERFILES and (REPO / "docker" / "README.md").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists_in_the_repository(dockerfile):
    copies = [(i, a) for i, a in _instructions(dockerfile) if i in ("COPY", "ADD")]
    assert copies, f"{dockerfile.name} copies nothing from the repository"
    for _, args in copies:
        sources = _copy_sources(args)
        if sources is None:
            continue
        assert sources, f"{dockerfile.name}: COPY {args} has no source"
        for src in sources:
            assert not src.startswith(("/", "..")), f"{dockerfile.name}: {src} is outside the build context"
            assert glob.glob(str(REPO / src)), f"{dockerfile.name}: COPY source {src} does not exist in the repository"
    assert _instructions(dockerfile)[0][0] in ("FROM", "ARG"), f"{dockerfile.name} does not start with FROM"


def test_the_copy_check_catches_a_missing_source(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM scratch\nCOPY pyproject.toml \\\n    no_such_folder ./\n# COPY commented_out ./\n")
    (_, args), = [(i, a) for i, a in _instructions(bad) if i == "COPY"]
    sources = _copy_sources(args)
    assert sources == ["pyproject.toml", "no_such_folder"]
    assert [s for s in sources if not glob.glob(str(REPO / s))] == ["no_such_folder"]
    assert _copy_sources("--from=builder /opt/venv /opt/venv") is None
