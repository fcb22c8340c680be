"""Masks drawn on real faces from their five landmarks, and faces framed as the competition's chest-up photos
(`maskds import-faces --draw-masks`, `--frame portrait`)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from maskds.core.faces import FIXED_BOX
from maskds.synth.portrait import STYLES, pattern_layer

PORTRAIT = (384, 512)  # (width, height) of the competition's photos
MASK_KINDS = ("correct", "nose_out", "chin")
SHAPES = ("surgical", "cloth", "kf94")
# A person's seven photos: stem -> (mask kind or None, mask state 0 wear / 1 incorrect / 2 none)
PHOTOS = {**{f"mask{i}": ("correct", 0) for i in range(1, 6)}, "incorrect_mask": (None, 1), "normal": (None, 2)}


def mask_outline(points: np.ndarray, kind: str, shape: str, rng: np.random.Generator) -> list[tuple[float, float]]:
    """The mask's outline from the five landmarks (eyes, nose, mouth corners): over the nose bridge and down
    past the chin (`correct`), below the nose (`nose_out`) or under the mouth, on the chin (`chin`)."""
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = points.tolist()
    eye = max(abs(rx - lx), 1.0)                       # the face's unit: the distance between the eyes
    eye_y, mouth_y = (ly + ry) / 2, (mly + mry) / 2
    cx = (nx + (mlx + mrx) / 2) / 2
    j = lambda: float(rng.uniform(-0.04, 0.04)) * eye  # noqa: E731 (each photo's own fit)
    top = {"correct": ny - 0.55 * (ny - eye_y), "nose_out": ny + 0.35 * (mouth_y - ny),
           "chin": mouth_y + 0.45 * (mouth_y - ny)}[kind] + j()
    bottom = mouth_y + (1.05 if kind != "chin" else 1.35) * eye + j()
    half = 1.05 * eye + j()
    if shape == "surgical":   # a rectangle gathered at the sides
        return [(cx - half, top + 0.1 * eye), (cx + half, top + 0.1 * eye), (cx + 0.95 * half, bottom - 0.15 * eye),
                (cx, bottom), (cx - 0.95 * half, bottom - 0.15 * eye)]
    if shape == "kf94":       # a ridge over the nose, pointed under the chin
        return [(cx - half, top + 0.3 * eye), (cx - 0.4 * half, top + 0.05 * eye), (cx, top),
                (cx + 0.4 * half, top + 0.05 * eye), (cx + half, top + 0.3 * eye),
                (cx + 0.7 * half, bottom - 0.3 * eye),
                (cx, bottom + 0.1 * eye), (cx - 0.7 * half, bottom - 0.3 * eye)]
    arc = np.linspace(0, np.pi, 9)                    # cloth: a rounded bottom
    return [(cx - half, top + 0.15 * eye), (cx, top), (cx + half, top + 0.15 * eye),
            *[(cx + half * np.cos(a), bottom - 0.45 * eye + 0.45 * eye * np.sin(a)) for a in arc[1:-1]]]


def draw_mask(face: Image.Image, points: np.ndarray, kind: str, style: tuple, shape: str,
              rng: np.random.Generator) -> Image.Image:
    """`face` with a mask of `style` (one of synth_portrait.STYLES) and `shape`, its ear loops, a soft edge
    and a little shading from the top (the mask's fold)."""
    outline = mask_outline(points, kind, shape, rng)
    alpha = Image.new("L", face.size, 0)
    ImageDraw.Draw(alpha).polygon(outline, fill=255)
    alpha = alpha.filter(ImageFilter.GaussianBlur(max(face.size) / 300))
    layer = pattern_layer(style, face.size, rng)
    shade = np.linspace(0.82, 1.05, face.size[1], dtype=np.float32)[:, None, None]
    layer = Image.fromarray(np.clip(np.asarray(layer, dtype=np.float32) * shade, 0, 255).astype(np.uint8))
    out = face.copy()
    out.paste(layer, mask=alpha)
    d = ImageDraw.Draw(out)
    eye = abs(float(points[1, 0] - points[0, 0]))
    loop = tuple(int(v * 0.8) for v in style[1])
    width = max(1, round(eye / 25))
    for (x, y), sign in ((outline[0], -1), (outline[2 if shape == "cloth" else 1 if shape == "surgical" else 4], 1)):
        d.line([(x, y), (x + sign * 0.35 * eye, float(points[0, 1]) + 0.1 * eye)], fill=loop, width=width)
    return out


def person_photos(face: Image.Image, points: np.ndarray, rng: np.random.Generator) -> dict[str, Image.Image]:
    """The competition's seven photos of one face: five masks worn properly (five styles, shapes drawn at
    random), one worn incorrectly (nose out or under the chin), none."""
    styles = [STYLES[int(k)] for k in rng.permutation(len(STYLES))[:6]]
    out = {}
    for i in range(5):
        out[f"mask{i + 1}"] = draw_mask(face, points, "correct", styles[i], SHAPES[int(rng.integers(len(SHAPES)))], rng)
    kind = MASK_KINDS[1 + int(rng.integers(2))]
    out["incorrect_mask"] = draw_mask(face, points, kind, styles[5], SHAPES[int(rng.integers(len(SHAPES)))], rng)
    out["normal"] = face.copy()
    return out


def square_around(face: Image.Image, centre=None) -> Image.Image:
    """`face` made square without stretching it: with `centre` (x, y; e.g. its landmarks' mean), the largest
    square centred there as far as the image allows; without, the whole face padded to a square on its short
    sides, since nothing says which part of it to keep (a middle cut loses a tall face's forehead and chin)."""
    w, h = face.size
    if w == h:
        return face
    side = min(w, h)
    if centre is None:
        # A flat fill of the face's mean border colour, not repeated edge pixels: a face crop often touches
        # its sides (cheeks, hair, ears), and repeating them smears the face wider, the stretch avoided here.
        pixels = np.asarray(face)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        fill = tuple(int(v) for v in np.atleast_1d(border.mean(axis=0).round()))
        square = Image.new(face.mode, (max(w, h), max(w, h)), fill if len(fill) > 1 else fill[0])
        square.paste(face, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
        return square
    cx, cy = float(centre[0]), float(centre[1])
    x0 = round(min(max(cx - side / 2, 0), w - side))
    y0 = round(min(max(cy - side / 2, 0), h - side))
    return face.crop((x0, y0, x0 + side, y0 + side))


def frame_portrait(face: Image.Image, rng: np.random.Generator, centre=None) -> Image.Image:
    """An aligned face crop placed as a 384x512 chest-up photo: the face fills the upper-centre box that
    `maskds build --face-crop fixed` crops (core.faces.FIXED_BOX), on a blurred, darkened copy of itself
    with shoulders below, so that the fixed crop, MTCNN and the whole photo all see a competition-like photo.
    A face that is not square is first cut to the square around `centre` (e.g. its landmarks' mean), or
    padded to a square when None (`square_around`), never stretched."""
    face = square_around(face, centre)
    w, h = PORTRAIT
    small = face.resize((w // 8, h // 8), Image.BILINEAR).filter(ImageFilter.GaussianBlur(2))
    canvas = ImageEnhance.Brightness(small.resize((w, h), Image.BILINEAR)).enhance(float(rng.uniform(0.55, 0.9)))
    x0, y0, x1, y1 = FIXED_BOX[0] * w, FIXED_BOX[1] * h, FIXED_BOX[2] * w, FIXED_BOX[3] * h
    side = round(min(x1 - x0, y1 - y0) * float(rng.uniform(0.95, 1.05)))
    cx = (x0 + x1) / 2 + float(rng.uniform(-0.03, 0.03)) * side
    cy = (y0 + y1) / 2 + float(rng.uniform(-0.03, 0.03)) * side
    shirt = tuple(int(v) for v in rng.integers(20, 200, size=3))
    ImageDraw.Draw(canvas).ellipse([cx - 0.85 * side, cy + 0.42 * side, cx + 0.85 * side, cy + 1.9 * side], fill=shirt)
    scaled = face.resize((side, side), Image.BICUBIC)
    soft = Image.new("L", (side, side), 0)
    ImageDraw.Draw(soft).ellipse([side * 0.02, 0, side * 0.98, side], fill=255)
    canvas.paste(scaled, (round(cx - side / 2), round(cy - side / 2)), soft.filter(ImageFilter.GaussianBlur(side / 40)))
    return canvas
