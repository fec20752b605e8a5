"""`python -m fastcifar.predict RUN_DIR IMAGE...`: the top classes of each image, with
probabilities. Images of any size up to 50 megapixels are resized to 32x32 (CIFAR-10's size);
16-bit, grayscale, palette and transparent images are converted to 8-bit RGB first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastcifar.cli import Parser, add_device_argument, positive_int, run_main
from fastcifar.errors import ImageInputError

# Larger images are refused before they are decoded: a small file can expand to gigabytes.
MAX_IMAGE_PIXELS = 50_000_000
BATCH = 256  # images per forward pass


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.predict", description=__doc__)
    parser.add_argument("run_dir", help="run folder written by fastcifar.train")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, ...)")
    parser.add_argument("--top", type=positive_int, default=3, help="(default: %(default)s)")
    add_device_argument(parser)
    parser.add_argument(
        "--allow-incomplete", action="store_true", help="use an unfinished run's last checkpoint"
    )
    return parser


def read_image(path: str) -> np.ndarray:
    """RGB uint8 (32, 32, 3); anything that is not a readable image raises ImageInputError."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if file.is_dir():
        raise ImageInputError(f"{path} is a directory, not an image file")
    if not file.is_file():
        raise ImageInputError(f"{path}: no such file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(file) as image:
            _check_size(image, path)
            rgb = to_rgb8(image)
    except Image.DecompressionBombError:
        raise ImageInputError(f"{path} is larger than {MAX_IMAGE_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageInputError(
            f"{path} is not an image file that Pillow can read (use PNG, JPEG, BMP, ...)"
        ) from None
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.device import pick_device
        from fastcifar.progress import progress
        from fastcifar.saved_run import load_run

        images = [read_image(path) for path in args.images]  # refuse bad input before any work
        device = pick_device(args.device)
        model, summary = load_run(args.run_dir, device, allow_incomplete=args.allow_incomplete)
        names = summary["class_names"]
        top = min(args.top, len(names))
        starts = range(0, len(images), BATCH)
        for start in progress(starts, "predict", unit="batch", nested=True, total=len(starts)):
            chunk = slice(start, start + BATCH)
            probabilities = model.predict_proba(to_batch(images[chunk], device)).cpu()
            for path, row in zip(args.images[chunk], probabilities, strict=True):
                values, indices = row.topk(top)
                ranked = ", ".join(
                    f"{names[i]} {100 * p:.1f}%" for p, i in zip(values, indices, strict=True)
                )
                print(f"{path}: {ranked}")

    run_main(run)


def to_batch(images: list[np.ndarray], device):
    """Normalised (B, 3, 32, 32) in channels_last, exactly as the loaders serve images."""
    import torch

    from fastcifar.loaders.torch_loader import normalisation, normalise

    pixels = torch.from_numpy(np.stack(images)).to(device)
    return normalise(pixels, *normalisation(device), None)


if __name__ == "__main__":
    main()
