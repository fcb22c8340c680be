"""The one age-label type: whole years, a range of years, or an age band, parsed, banded and written here.

Import (`maskds import-faces`), the `--extra` labels.csv, pseudo-labels and the cache all read and write an
age cell through `AgeLabel`: "34" (whole years), "20-29" (a range, both ends included), "70-" (70 or older,
FairFace's "more than 70"), and a band written as the range of years it holds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from maskds.core.labels import AGE_NAMES, DEFAULT_AGE_THRESHOLDS, age_band

MAX_YEARS = 120
_RANGE = re.compile(r"^\s*(\d{1,3})\s*-\s*(\d{1,3})\s*$")
_OLDER = re.compile(r"^\s*(?:more than|over|above)\s+(\d{1,3})\s*$|^\s*(\d{1,3})\s*[+-]\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class AgeLabel:
    """An age as a label gives it: `low`..`high` years, both included (equal: whole years; `high` None: `low`
    or older)."""
    low: int
    high: int | None

    @classmethod
    def parse(cls, value: str) -> AgeLabel | None:
        """Whole years ("34"), a range ("20-29", " 20 - 29 ") or an open one ("70-", "70+", "more than 70");
        None when it does not parse or lies outside 0..120."""
        value = str(value).strip()
        if value.isdigit():
            return cls(int(value), int(value)) if int(value) <= MAX_YEARS else None
        m = _RANGE.match(value)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            return cls(lo, hi) if lo <= hi <= MAX_YEARS else None
        m = _OLDER.match(value)
        if m:
            lo = int(m.group(1) or m.group(2))
            return cls(lo, None) if lo <= MAX_YEARS else None
        return None

    @classmethod
    def of_band(cls, band: int, thresholds=DEFAULT_AGE_THRESHOLDS) -> AgeLabel:
        """A band as the range of years it holds: 0-29, 30-59, 60- (by `thresholds`)."""
        low, high = thresholds
        return [cls(0, low - 1), cls(low, high - 1), cls(high, None)][band]

    @property
    def years(self) -> int | None:
        """The age in whole years, or None for a range."""
        return self.low if self.high == self.low else None

    def bands(self, thresholds=DEFAULT_AGE_THRESHOLDS) -> tuple[int, int]:
        """The first and last band the label's years fall in."""
        return age_band(self.low, thresholds), age_band(MAX_YEARS if self.high is None else self.high, thresholds)

    def band(self, thresholds=DEFAULT_AGE_THRESHOLDS) -> int:
        """The band that holds every year of the label, or -1 when it spans two bands."""
        first, last = self.bands(thresholds)
        return first if first == last else -1

    def spanned(self, thresholds=DEFAULT_AGE_THRESHOLDS) -> str:
        """The bands a label across two bands spans ("<30 and 30-59"); "" when one band holds it."""
        first, last = self.bands(thresholds)
        return "" if first == last else " and ".join(AGE_NAMES[first:last + 1])

    def __str__(self) -> str:
        """As a labels.csv cell: "34", "20-29" or "70-"."""
        if self.high is None:
            return f"{self.low}-"
        return str(self.low) if self.high == self.low else f"{self.low}-{self.high}"


def parse_age(value: str) -> str | None:
    """A recorded age in its canonical cell form ("34", "20-29", "70-"), or None when it is not an age."""
    label = AgeLabel.parse(value)
    return None if label is None else str(label)


def cell_band(value: str, thresholds=DEFAULT_AGE_THRESHOLDS) -> int:
    """The band of a labels.csv age cell (whole years, or a range inside one band); -1 when empty, not an
    age, or a range across two bands."""
    label = AgeLabel.parse(value)
    return -1 if label is None else label.band(thresholds)
