"""Every citation in the code and docs points at something a reader can open: a paper or a public repository.

Documents that live outside this repository (notes, summaries, paths beside a checkout) are not citations.
"""

from __future__ import annotations

import re

from conftest import REPO

# spelled in pieces so that this file does not match itself
OUTSIDE = re.compile("|".join(["reference" + r"[ -](facts|implementations)", "style" + "-anchors",
                               r"\.\./" + "shared/(papers|reference)", "fact" + " sheet", "complaints? #"]),
                     re.IGNORECASE)
TEXT = (".py", ".md", ".yaml", ".sh", ".toml", ".txt")


def test_no_citation_of_a_document_outside_the_repository():
    files = [REPO / "README.md", *(p for d in ("src", "tests", "docs", "scripts", "configs", "datasets",
                                              "checkpoints") for p in (REPO / d).rglob("*") if p.suffix in TEXT)]
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)
