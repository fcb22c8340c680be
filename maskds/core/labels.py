"""The label space: mask x gender x age band = 18 classes, and the raw names that map onto it."""
from __future__ import annotations

MASK_NAMES = ("wear", "incorrect", "not_wear")
GENDER_NAMES = ("male", "female")
AGE_NAMES = ("<30", "30-59", ">=60")
HEADS = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}
HEAD_SIZES = {"mask": 3, "gender": 2, "age": 3}
HEAD_NAMES = ("mask", "gender", "age")  # the three heads, in class-id order (class = mask*6 + gender*3 + band)

# Which labels a training row has (bits of the `known` target column): extra data may lack some, a
# pseudo-labelled row has the age band but not the age in years. Missing labels are -1 in the cache.
# KNOWN_INTERVAL: the age is known as a competition band's interval of years (a pseudo label, or an --extra
# age range; exact under any thresholds); KNOWN_BAND: the band under the training thresholds (`band_fits` says
# when a competition band is one). An EXTRA row comes from `--extra` data (weighed `extra_weight`).
KNOWN_MASK, KNOWN_GENDER, KNOWN_BAND, KNOWN_AGE, PSEUDO, KNOWN_INTERVAL, EXTRA = 1, 2, 4, 8, 16, 32, 64
ALL_KNOWN = KNOWN_MASK | KNOWN_GENDER | KNOWN_BAND | KNOWN_AGE
NUM_CLASSES = 18

# The seven image stems of every person folder and the mask state each one shows.
IMAGE_STEMS = {
    "mask1": 0, "mask2": 0, "mask3": 0, "mask4": 0, "mask5": 0,
    "incorrect_mask": 1,
    "normal": 2,
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
GENDER_CODES = {"male": 0, "female": 1}

# Competition thresholds: < 30, 30..59, >= 60. Training may move them (e.g. upper 58).
DEFAULT_AGE_THRESHOLDS = (30, 60)
# The competition's data records everyone 60 or older as 60: that age means "60 or more" (censored).
CENSORED_AGE = 60


def age_band(age: int, thresholds: tuple[int, int] | list[int] = DEFAULT_AGE_THRESHOLDS) -> int:
    """Age band 0/1/2 of an age: band 1 starts at thresholds[0], band 2 at thresholds[1]."""
    low, high = thresholds
    if not low < high:
        raise ValueError(f"age thresholds must increase, got {list(thresholds)}")
    return 0 if age < low else (1 if age < high else 2)


def band_fits(band: int, thresholds: tuple[int, int] | list[int]) -> bool:
    """Whether the competition band `band`'s interval of years lies inside the band of the same index
    under `thresholds`: then a band-only label (a pseudo label) is also a band in training. Under
    [30, 58], [0,30) and [60,+) do, [30,60) does not (58 and 59 are band 2 there)."""
    ours, theirs = (0, *DEFAULT_AGE_THRESHOLDS, float("inf")), (0, *thresholds, float("inf"))
    return theirs[band] <= ours[band] and ours[band + 1] <= theirs[band + 1]


def encode(mask: int, gender: int, band: int) -> int:
    """The 18-class id of (mask, gender, age band)."""
    return mask * 6 + gender * 3 + band


def decode(cls: int) -> tuple[int, int, int]:
    """(mask, gender, age band) of an 18-class id."""
    if not 0 <= cls < NUM_CLASSES:
        raise ValueError(f"class id must be in 0..17, got {cls}")
    return cls // 6, (cls // 3) % 2, cls % 3


def class_name(cls: int) -> str:
    """Human-readable name of an 18-class id, e.g. 'wear/female/30-59'."""
    m, g, a = decode(cls)
    return f"{MASK_NAMES[m]}/{GENDER_NAMES[g]}/{AGE_NAMES[a]}"
