"""Image decoding shared by build, training and inference: upright RGB, the same way everywhere."""
from __future__ import annotations

import io
from pathlib import Path

import cv2  # installed with albumentations; decodes JPEG faster than PIL
import numpy as np
from PIL import Image, ImageOps

# Resampling used for the one resize to the cache size, at build and at inference alike.
RESAMPLE = Image.Resampling.BILINEAR


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit gray: scale the real range into 0..255 instead of clipping it.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency on white rather than letting it turn black.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(source: str | Path | bytes) -> Image.Image:
    """Open a path or encoded bytes as an upright (EXIF-transposed) 8-bit RGB PIL image."""
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(fp) as img:
        img.load()
        upright = ImageOps.exif_transpose(img)
        return _to_rgb(upright)


def load_rgb(source: str | Path | bytes) -> np.ndarray:
    """Decode a path or encoded bytes to an upright HxWx3 uint8 RGB array."""
    return np.asarray(open_rgb(source))


def prepare(source: str | Path | bytes, size_hw: tuple[int, int] | None, crop: tuple | None = None) -> Image.Image:
    """Decode upright RGB, crop the face when `crop` = (method, margin) says so (`core.faces`), and resize
    to (height, width): the one resize done at build and inference."""
    return prepare_with_box(source, size_hw, crop)[0]


def prepare_with_box(source: str | Path | bytes, size_hw: tuple[int, int] | None,
                     crop: tuple | None = None) -> tuple[Image.Image, list[float] | None, bool]:
    """`prepare`, and the face box (fractions of the photo; None without a crop) and whether it was found."""
    img, box, found = open_rgb(source), None, False
    if crop is not None and crop[0] != "none":
        from maskds.core.faces import face_crop

        img, box, found = face_crop(img, crop[0], size_hw or img.size[::-1], crop[1])
    if size_hw is not None:
        h, w = int(size_hw[0]), int(size_hw[1])
        if img.size != (w, h):
            img = img.resize((w, h), RESAMPLE)
    return img, box, found


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """Encode an RGB PIL image as JPEG bytes (no EXIF: the pixels are already upright)."""
    buf = io.BytesIO()
    # 4:4:4 (no chroma subsampling): small cache sizes would otherwise halve the colour resolution
    # of fine cues (mask patterns) and double the round-trip error, for ~25% more bytes.
    img.save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def cache_bytes(source: str | Path | bytes, size_hw: tuple[int, int] | None, crop: tuple | None = None) -> bytes:
    """What `maskds build` stores for an image: upright RGB, the face cropped if asked, resized once,
    JPEG-encoded."""
    return encode_jpeg(prepare(source, size_hw, crop))


def cached_pixels(source: str | Path | bytes, size_hw: tuple[int, int] | None, crop: tuple | None = None) -> np.ndarray:
    """The pixels a training loader sees for this image: `decode_cached(cache_bytes(...))`.

    Inference uses it on raw eval files so the model gets exactly the pipeline it was trained on
    (the same face crop when the cache had one).
    """
    return decode_cached(cache_bytes(source, size_hw, crop))


def decode_cached(data: bytes) -> np.ndarray:
    """Decode cache bytes (already upright RGB) to an HxWx3 uint8 array, fast path for loaders."""
    # Cache bytes carry no EXIF (build wrote upright pixels), so skip the orientation lookup.
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:  # not something OpenCV reads: fall back to the general path
        return load_rgb(data)
    return arr


def single_threaded_opencv(worker_id: int) -> None:
    """A loader worker's init: the workers are the parallelism, so OpenCV's own thread pool in each would
    oversubscribe the cores."""
    cv2.setNumThreads(0)
