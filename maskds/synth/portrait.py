"""Drawing for `maskds synth`: a person from the chest up whose mask, gender and age cues are visible shapes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 384, 512
_XN = np.linspace(-1.0, 1.0, WIDTH, dtype=np.float32)  # horizontal position, for side lighting
_YY, _XX = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
_NOISE: list[np.ndarray] = []


def _noise() -> np.ndarray:
    """A fixed bank of sensor noise, cut at a random offset per image (cheaper than fresh noise)."""
    if not _NOISE:
        _NOISE.append(np.random.default_rng(1234).standard_normal((HEIGHT + 32, WIDTH + 32, 3), dtype=np.float32))
    return _NOISE[0]

SKINS = ((241, 194, 167), (224, 172, 138), (198, 134, 103), (160, 110, 80), (112, 74, 52))
DARK_HAIR = ((25, 20, 18), (55, 35, 25), (80, 50, 30), (40, 30, 28))
# Mask styles: (pattern, base colour, pattern colour). mask1..mask5 of a person use 5 different ones.
STYLES = (
    ("pleats", (150, 190, 225), (105, 140, 180)),
    ("pleats", (236, 236, 230), (170, 170, 165)),
    ("plain", (30, 30, 35), (30, 30, 35)),
    ("dots", (225, 140, 170), (250, 250, 250)),
    ("stripes", (40, 50, 110), (235, 235, 235)),
    ("seam", (205, 208, 215), (120, 120, 130)),
    ("checks", (200, 40, 45), (245, 245, 245)),
    ("blotch", (70, 110, 60), (35, 60, 30)),
)
# Mask outline around the nose and mouth, in face units (face centre at 0, 0; face 164 wide, 240 tall).
MASK_POLY = ((-88, 2), (-45, -10), (0, -14), (45, -10), (88, 2), (82, 78), (42, 116), (0, 124),
             (-42, 116), (-82, 78))


@dataclass(frozen=True)
class Look:
    """What stays the same across one person's 7 photos: the scene, the person, their masks' colours."""
    gender: int
    band: int
    background: np.ndarray
    skin: tuple
    shirt: tuple
    hair: tuple
    streak: tuple  # second hair colour: strong dark streaks on greying hair, faint otherwise
    hair_len: float
    shoulders: float
    eye: tuple
    lips: tuple
    earrings: tuple | None
    scale: float
    styles: tuple

    @property
    def n_styles(self) -> int:
        return len(self.styles)


def _jitter(rng: np.random.Generator, colour, amount: int = 12) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A per-person backdrop: vertical or horizontal gradient, or wide diagonal stripes."""
    c0, c1 = rng.integers(30, 231, size=(2, 3)).astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:
        t = _YY / HEIGHT
    elif kind == 1:
        t = _XX / WIDTH
    else:
        t = (((_XX + _YY) // float(rng.integers(40, 90))) % 2) * 0.5
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.uint8)


def _hair(rng: np.random.Generator, band: int) -> tuple[tuple, tuple]:
    """Hair colour by age band: dark (< 30), grey with dark streaks (30..59), white (>= 60)."""
    if band == 0:
        hair = _jitter(rng, DARK_HAIR[int(rng.integers(len(DARK_HAIR)))], 10)
        return hair, _jitter(rng, hair, 12)
    if band == 1:
        g = int(rng.integers(120, 155))
        return (g + 6, g, g - 4), _jitter(rng, DARK_HAIR[int(rng.integers(len(DARK_HAIR)))], 8)
    g = int(rng.integers(205, 242))
    hair = (g, g, g - int(rng.integers(0, 10)))
    return hair, _jitter(rng, hair, 10)


def random_look(rng: np.random.Generator, gender: int, band: int) -> Look:
    """Draw the fixed appearance of one person of `gender` (0 male, 1 female) and age `band`."""
    hair, streak = _hair(rng, band)
    female = gender == 1
    earrings = None
    if female and rng.random() < 0.75:
        earrings = ((230, 190, 40), (220, 220, 230), (220, 30, 60))[int(rng.integers(3))]
    return Look(
        gender=gender, band=band, background=_background(rng),
        skin=_jitter(rng, SKINS[int(rng.integers(len(SKINS)))]),
        shirt=tuple(int(c) for c in rng.integers(20, 236, size=3)),
        hair=hair, streak=streak,
        hair_len=float(rng.uniform(175, 255)) if female else 0.0,
        shoulders=float(rng.uniform(130, 145) if female else rng.uniform(170, 185)),
        eye=_jitter(rng, ((70, 45, 30), (40, 30, 25), (60, 90, 120))[int(rng.integers(3))], 8),
        lips=_jitter(rng, (185, 80, 90) if female else (165, 95, 90), 15),
        earrings=earrings, scale=float(rng.uniform(0.9, 1.1)),
        styles=tuple((p, _jitter(rng, c0, 15), _jitter(rng, c1, 10)) for p, c0, c1 in STYLES),
    )


class _Canvas:
    """Draws face-unit shapes on the picture and, alongside, on a mask of where hair shows."""

    def __init__(self, img: Image.Image, cx: float, cy: float, s: float):
        self.d = ImageDraw.Draw(img)
        self.hair_mask = Image.new("L", img.size, 0)
        self.m = ImageDraw.Draw(self.hair_mask)
        self.cx, self.cy, self.s = cx, cy, s

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.s * x, self.cy + self.s * y)

    def box(self, x0, y0, x1, y1) -> list[float]:
        return [*self.p(x0, y0), *self.p(x1, y1)]

    def shape(self, kind: str, coords, fill, hair: bool = False, **kw) -> None:
        getattr(self.d, kind)(coords, fill=fill, **kw)
        getattr(self.m, kind)(coords, fill=255 if hair else 0, **kw)

    def line(self, pts, fill, width: float) -> None:
        self.d.line([self.p(*q) for q in pts], fill=fill, width=max(1, round(width * self.s)))


def _shade(colour, f: float) -> tuple:
    return tuple(int(np.clip(c * f, 0, 255)) for c in colour)


def _body_and_hair(c: _Canvas, look: Look) -> None:
    """Long hair behind (women), shoulders, neck, hair strands in front, ears, earrings, face."""
    sw, hl = look.shoulders, look.hair_len
    if look.gender == 1:
        c.shape("rounded_rectangle", c.box(-118, -140, 118, hl), look.hair, True, radius=60 * c.s)
    c.shape("ellipse", c.box(-sw, 150, sw, 650), look.shirt)
    nw = 40 if look.gender == 0 else 29
    c.shape("rectangle", c.box(-nw, 60, nw, 175), _shade(look.skin, 0.9))
    if look.gender == 1:
        for x0 in (-122, 88):
            c.shape("rounded_rectangle", c.box(x0, -70, x0 + 34, hl), look.hair, True, radius=14 * c.s)
    for x0 in (-98, 74):
        c.shape("ellipse", c.box(x0, -45, x0 + 24, 10), look.skin)
    if look.earrings:
        for x0 in (-96, 78):
            c.shape("ellipse", c.box(x0, 6, x0 + 18, 24), look.earrings)
    c.shape("ellipse", c.box(-82, -125, 82, 115), look.skin)
    if look.gender == 0:
        c.shape("chord", c.box(-90, -152, 90, -18), look.hair, True, start=180, end=360)
        for x0 in (-87, 73):
            c.shape("rectangle", c.box(x0, -88, x0 + 14, -40), look.hair, True)
    else:
        c.shape("chord", c.box(-94, -152, 94, -6), look.hair, True, start=180, end=360)


def _features(c: _Canvas, look: Look) -> None:
    """Eyes, brows, nose, mouth, and the wrinkles that come with age."""
    brow = look.hair if look.band else _shade(look.hair, 0.9)
    for sign in (-1, 1):
        c.line([(sign * 56, -46), (sign * 18, -50)], brow, 7 if look.gender == 0 else 4)
        x0, x1 = sorted((sign * 50, sign * 20))
        c.shape("ellipse", c.box(x0, -36, x1, -20), (245, 245, 245))
        c.shape("ellipse", c.box(sign * 35 - 6, -34, sign * 35 + 6, -22), look.eye)
    c.shape("polygon", [c.p(0, -10), c.p(-15, 35), c.p(15, 35)], _shade(look.skin, 0.8))
    for x0 in (-12, 4):
        c.shape("ellipse", c.box(x0, 30, x0 + 8, 38), _shade(look.skin, 0.45))
    c.shape("ellipse", c.box(-28, 55, 28, 73), look.lips)
    c.line([(-26, 64), (26, 64)], _shade(look.lips, 0.5), 2)
    line = _shade(look.skin, 0.55)
    rows = {0: (), 1: (-70, -60), 2: (-76, -67, -58)}[look.band]
    for y in rows:
        c.line([(-42, y), (0, y - 3), (42, y)], line, 4)
    if look.band == 2:
        for sign in (-1, 1):
            c.line([(sign * 54, -30), (sign * 66, -37)], line, 3)
            c.line([(sign * 54, -25), (sign * 67, -22)], line, 3)


def pattern_layer(style: tuple, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A full-size layer filled with a mask style's colour and pattern (`style`: one of STYLES)."""
    pattern, base, ink = style
    layer = Image.new("RGB", size, base)
    d = ImageDraw.Draw(layer)
    w, h = size
    if pattern == "pleats":
        for y in range(0, h, 22):
            d.line([(0, y), (w, y)], fill=ink, width=4)
    elif pattern == "dots":
        for y in range(0, h, 26):
            for x in range((y // 26) % 2 * 13, w, 26):
                d.ellipse([x - 6, y - 6, x + 6, y + 6], fill=ink)
    elif pattern == "stripes":
        for y in range(0, h, 24):
            d.rectangle([0, y, w, y + 9], fill=ink)
    elif pattern == "seam":
        for x in range(w // 2 - 2, w, 200):
            d.line([(x, 0), (x, h)], fill=ink, width=5)
    elif pattern == "checks":
        for y in range(0, h, 40):
            for x in range((y // 40) % 2 * 20, w, 40):
                d.rectangle([x, y, x + 19, y + 19], fill=ink)
    elif pattern == "blotch":
        for _ in range(60):
            x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(8, 20)
            d.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    return layer


def _draw_mask(img: Image.Image, c: _Canvas, look: Look, style: int, drop: float, rng) -> None:
    """Paste a mask over nose and mouth (drop 0) or lower, leaving the nose out (incorrect)."""
    pts = [c.p(x, y + drop) for x, y in MASK_POLY]
    alpha = Image.new("L", img.size, 0)
    ImageDraw.Draw(alpha).polygon(pts, fill=255)
    img.paste(pattern_layer(look.styles[style], img.size, rng), mask=alpha)
    ImageDraw.Draw(c.hair_mask).polygon(pts, fill=0)
    loop = _shade(look.styles[style][1], 0.75)
    for sign in (-1, 1):
        c.line([(sign * 85, 8 + drop), (sign * 86, -18)], loop, 3)


def draw_person_image(rng: np.random.Generator, look: Look, mask_state: int, style: int) -> Image.Image:
    """One 384x512 photo of `look` with mask state 0 (wear), 1 (incorrect) or 2 (none)."""
    img = Image.fromarray(look.background)
    s = look.scale * float(rng.uniform(0.94, 1.06))
    c = _Canvas(img, WIDTH / 2 + float(rng.uniform(-28, 28)), 215 + float(rng.uniform(-20, 20)), s)
    _body_and_hair(c, look)
    _features(c, look)
    if mask_state != 2:
        _draw_mask(img, c, look, style, 0.0 if mask_state == 0 else float(rng.uniform(50, 72)), rng)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.BoxBlur(1))
    arr = np.asarray(img, dtype=np.float32)
    # Hair texture: dark streaks on greying hair (the 30..59 cue), faint ones otherwise.
    box = c.hair_mask.getbbox()
    if box:
        x0, y0, x1, y1 = box
        phase, period = float(rng.uniform(0, 40)), float(rng.uniform(9, 14))
        streaks = ((_XX[y0:y1, x0:x1] + 0.3 * _YY[y0:y1, x0:x1] + phase) % period) < period * 0.45
        sel = (np.asarray(c.hair_mask)[y0:y1, x0:x1] > 0) & streaks
        arr[y0:y1, x0:x1][sel] = np.asarray(look.streak, dtype=np.float32)
    light = float(rng.uniform(0.82, 1.15)) + float(rng.uniform(-0.15, 0.15)) * _XN
    arr *= light[None, :, None]
    dy, dx = (int(v) for v in rng.integers(0, 33, size=2))
    arr += _noise()[dy:dy + HEIGHT, dx:dx + WIDTH] * float(rng.uniform(2, 7))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
