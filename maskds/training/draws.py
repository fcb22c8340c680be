"""Which rows an epoch trains, drawn from (seed, epoch) alone: persons' rows grouped (`PersonRows`), one labelled
photo per person (`PersonDraw`), k photos per person (`PhotoDraw`), extra persons per epoch (`ExtraDraw`)."""
from __future__ import annotations

import numpy as np

from maskds.core.labels import KNOWN_AGE, KNOWN_BAND, KNOWN_GENDER, KNOWN_INTERVAL


class PersonRows:
    """Rows grouped by person, from `persons` (each row's person id): `person`, each row's person number
    (persons numbered in their ids' sorted order), and `order`, the rows sorted by person, each person's
    rows in row order, or by `within` (one sort key a row; ties in row order) where given. The draws below
    pick from these groups, so their order is part of every seed's draw."""

    def __init__(self, persons, within=None):
        _, self.person = np.unique(np.asarray(persons), return_inverse=True)
        self.order = (np.argsort(self.person, kind="stable") if within is None
                      else np.lexsort((np.asarray(within), self.person)))

    def members(self) -> list[np.ndarray]:
        """Each person's row positions, persons in number order."""
        if not len(self.order):
            return []
        return np.split(self.order, np.flatnonzero(np.diff(self.person[self.order])) + 1)

    def rank(self) -> np.ndarray:
        """Each row's place among its person's rows (0 for the first)."""
        ranked = self.person[self.order]
        rank = np.empty(len(self.person), dtype=np.int64)
        rank[self.order] = np.arange(len(self.person)) - np.searchsorted(ranked, ranked, side="left")
        return rank

    def count(self) -> np.ndarray:
        """Each row's person's row count."""
        return np.bincount(self.person)[self.person]


class PersonDraw:
    """Person-level sampling (`person_sampling`): each epoch one image of each person, drawn from (seed,
    epoch, person), keeps its gender and age labels; the person's other images teach the mask head only.
    So the gender and age heads see every person once per epoch, as often as any other, whatever their
    image count. `persons`: the person id of each training sample, in sample order. With `photos`
    (`photos_per_person`), the rows it draws from keep them on their person's first drawn photo instead,
    so the kept one is always among the photos the epoch trains on."""

    def __init__(self, persons, seed: int, photos: PhotoDraw | None = None):
        groups = PersonRows(persons)  # only its arrays are kept: a PersonDraw goes to every loader worker
        self.person, self.rank, self.count, self.seed = groups.person, groups.rank(), groups.count(), seed
        self.photos = photos

    def labels(self, row: np.ndarray, i: int, epoch: int) -> np.ndarray:
        """Sample i's label row (class, age, known) for `epoch`: as it is when drawn, else mask-only."""
        if self.photos is not None and i < len(self.photos.person):
            keep = bool(self.photos.drawn(epoch)[1][i])
        else:
            pick = np.random.default_rng([self.seed, epoch, int(self.person[i])]).integers(self.count[i])
            keep = pick == self.rank[i]
        if keep:
            return row
        out = row.copy()
        out[2] &= ~(KNOWN_GENDER | KNOWN_BAND | KNOWN_AGE | KNOWN_INTERVAL)
        return out


class PhotoDraw:
    """`photos_per_person` = k: each epoch each person of `persons` (each row's person: the rows trained every
    epoch) trains on k of its photos (all of them if it has fewer), drawn without replacement from (seed,
    epoch) alone: one random key per row, each person's k lowest. So every process and a resumed run draw
    the same photos, and the epoch's length is the sum of min(k, photos): persons x k on the competition's.
    Uniform, not stratified by mask state: every photo is drawn with chance k/7, so an epoch keeps the 5 worn :
    1 incorrect : 1 not worn balance of all photos in expectation (within about a percent over 2,700
    persons); always keeping the incorrect and not-worn photos would make them 2 of k (no worn one at k=2)."""

    def __init__(self, persons, k: int, seed: int):
        self.person, self.k, self.seed = PersonRows(persons).person, int(k), seed
        self.size = int(np.minimum(np.bincount(self.person), self.k).sum()) if len(self.person) else 0
        self._drawn: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return self.size

    def drawn(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(the epoch's row positions, person by person, each in its draw order; for every row position,
        whether it is its person's first drawn photo: the one `PersonDraw` keeps gender and age on)."""
        if self._drawn is None or self._drawn[0] != epoch:
            keys = np.random.default_rng([self.seed, epoch, 0x9F]).random(len(self.person))
            groups = PersonRows(self.person, within=keys)  # by person, then by key
            rank = groups.rank()
            self._drawn = (epoch, (groups.order[rank[groups.order] < self.k], rank == 0))
        return self._drawn[1]


class ExtraDraw:
    """The epoch's samples as training-row positions. The training rows are the competition's (positions
    0..n_fixed-1: every one each epoch, or with `photos` its draw of k per person) and, for `extra_per_epoch`,
    a pool of extra rows after them: each epoch `count` pool persons (`persons`: the pool in shuffled passes),
    one photo each, drawn from (seed, epoch) alone. So every process and a resumed run draw the same rows, and the epoch's length stays
    n_fixed (or len(photos)) + count however large the pool. `pool_persons`: each pool row's person."""

    def __init__(self, n_fixed: int, pool_persons, count: int, seed: int, photos: PhotoDraw | None = None):
        self.members = PersonRows(pool_persons).members()
        self.n_fixed, self.count, self.seed = n_fixed, min(int(count), len(self.members)), seed
        self.photos = photos
        self.fixed = n_fixed if photos is None else len(photos)  # samples before the extra ones
        self._drawn: tuple[int, np.ndarray] | None = None
        self._passes: list[np.ndarray] = []  # the passes over the pool drawn so far (`_pass`)

    def __len__(self) -> int:
        return self.fixed + self.count

    def drawn(self, epoch: int) -> np.ndarray:
        """Positions (in the training rows) of the epoch's `count` extra photos."""
        if self._drawn is None or self._drawn[0] != epoch:
            persons = self.persons(epoch)
            rng = np.random.default_rng([self.seed, epoch, 0xE8])
            pick = [self.members[p][rng.integers(len(self.members[p]))] for p in persons]
            self._drawn = (epoch, self.n_fixed + np.asarray(pick, dtype=np.int64))
        return self._drawn[1]

    def persons(self, epoch: int) -> np.ndarray:
        """The epoch's `count` pool persons: the epochs read one after another through passes over the pool,
        each a shuffle (`_pass`), so every person is drawn once before any is drawn twice."""
        if not self.count:
            return np.zeros(0, dtype=np.int64)
        n = len(self.members)
        k, offset = divmod(epoch * self.count, n)
        persons = self._pass(k)[offset:offset + self.count]
        if len(persons) < self.count:  # the epoch spans two passes
            persons = np.concatenate([persons, self._pass(k + 1)[:self.count - len(persons)]])
        return persons

    def _pass(self, k: int) -> np.ndarray:
        """Pass k over the pool: a permutation from (seed, k) whose first places leave out the persons that
        pass k-1's last places gave the epoch spanning the two (so no epoch holds a person twice)."""
        while len(self._passes) <= k:
            j, n = len(self._passes), len(self.members)
            order = np.random.default_rng([self.seed, j, 0xE7]).permutation(n)
            shared = (j * n) % self.count  # places of pass j-1 in the epoch that spans into pass j
            if j and shared:
                tail = set(self._passes[j - 1][n - shared:].tolist())
                first = np.fromiter((p for p in order if p not in tail), dtype=np.int64)[:self.count - shared]
                keep = set(first.tolist())
                order = np.concatenate([first, np.fromiter((p for p in order if p not in keep), dtype=np.int64)])
            self._passes.append(order)
        return self._passes[k]

    def position(self, i: int, epoch: int) -> int:
        """The training-row position sample i of `epoch` reads."""
        if i >= self.fixed:
            return int(self.drawn(epoch)[i - self.fixed])
        return i if self.photos is None else int(self.photos.drawn(epoch)[0][i])
