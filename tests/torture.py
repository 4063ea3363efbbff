"""The shared RFC 4475/5118 torture corpus: where it is and what its manifest expects.

Tests read the files from ``../shared/sip-torture`` (never copied into this repository).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TORTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "sip-torture"


@dataclass(frozen=True)
class Case:
    """One manifest row."""

    file: str
    section: str
    parse: str  # valid | invalid | either
    expectation: str

    @property
    def path(self) -> Path:
        return TORTURE_DIR / self.file

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def is_response(self) -> bool:
        return self.data.startswith(b"SIP/")

    @property
    def codes(self) -> set[int]:
        """Response codes the expectation names (empty when it only says processed/dropped)."""
        codes = {int(c) for c in re.findall(r"\b([1-6]\d\d)\b", self.expectation)}
        text = self.expectation.lower()
        if "registrar (challenge or 2xx)" in text or "handled by the registrar" in text:
            codes |= {200, 401}  # a digest challenge, or a registration accepted
        if "or refused" in text:
            codes |= {403}
        return codes

    @property
    def may_be_processed(self) -> bool:
        text = self.expectation.lower()
        return (
            text.startswith(("processed", "first message processed"))
            or "or processed" in text
            or "or routed" in text
        )


def load_manifest() -> list[Case]:
    cases = []
    for line in (TORTURE_DIR / "MANIFEST.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        file, section, parse, expectation = line.split("\t")
        cases.append(Case(file, section, parse, expectation))
    return cases


def expected_statuses(case: Case) -> tuple[set[int], bool]:
    """(codes the SBC may answer with, whether 'processed' is also acceptable)."""
    return case.codes, case.may_be_processed


# Statuses that mean "refused as malformed"; a processed request never gets these.
MALFORMED_STATUSES = {400, 505}
