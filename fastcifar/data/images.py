"""Image files as a model of this network takes them: any size up to 50 megapixels brought to
32x32 (squashed whole, or their central square), 16-bit, grayscale, palette and transparent
images converted to 8-bit RGB first; a folder stands for the image files in it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fastcifar.errors import ImageInputError

# Larger images are refused before they are decoded: a small file can expand to gigabytes.
MAX_IMAGE_PIXELS = 50_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
RESIZE_MODES = ("squash", "crop")


def image_paths(arguments: list[str | Path]) -> list[Path]:
    """The files named, and the image files of the folders named (sorted by name)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            paths += found or [path]  # an empty folder: one unreadable entry, as a missing file
        else:
            paths.append(path)
    return paths


def read_image(path: str | Path, resize: str = "squash") -> np.ndarray:
    """RGB uint8 (32, 32, 3); anything that is not a readable image raises ImageInputError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    file = Path(path)
    if file.is_dir():
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in file.iterdir()):
            raise ImageInputError(
                f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        raise ImageInputError(f"{path} is a directory, not an image file")
    if not file.is_file():
        raise ImageInputError(f"{path}: no such file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns from 1x to 2x its limit and refuses beyond: both are ours to say.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                _check_size(image, str(path))
                # A camera stores a photo as its sensor saw it and the turn in EXIF: turned
                # upright here, or a portrait photo is classified lying on its side.
                rgb = to_rgb8(ImageOps.exif_transpose(image))
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(f"{path} is larger than {MAX_IMAGE_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageInputError(
            f"{path} is not an image file that Pillow can read (use PNG, JPEG, BMP, ...)"
        ) from None
    if resize == "crop":
        side = min(rgb.size)
        left, top = (rgb.size[0] - side) // 2, (rgb.size[1] - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    if rgb.size != (32, 32):
        rgb = rgb.resize((32, 32), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _check_size(image, path: str) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageInputError(
            f"{path} is {width}x{height}, larger than {MAX_IMAGE_PIXELS:,} pixels"
        )


def to_rgb8(image):
    """8-bit RGB of any Pillow image. Pillow's own convert("RGB") clips 16-bit values at 255
    (a mid-grey 16-bit PNG turns white), so high-depth modes are scaled to 8 bits first."""
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if image.mode != "I" or values.max() > 255 else 1.0
        gray = np.clip(np.round(values / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "F":
        raise ValueError("floating-point images have no defined brightness scale")
    if image.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa"):
        image = image.convert("RGBA")  # a palette may carry transparency
    return image.convert("RGB")
