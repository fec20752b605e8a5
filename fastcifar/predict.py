"""`python -m fastcifar.predict RUN_DIR IMAGE|FOLDER...`: the top classes of each image, with
probabilities. Images of any size up to 50 megapixels are brought to 32x32 (CIFAR-10's size):
squashed whole, or with --resize crop, their central square; 16-bit, grayscale, palette and
transparent images are converted to 8-bit RGB first. A folder stands for the images in it.

A file that cannot be read is one line, and the others are still predicted; the exit status
is then 2. --json prints one JSON document instead of lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fastcifar.cli import Parser, add_saved_run_arguments, count, run_main
from fastcifar.errors import ImageInputError

# Larger images are refused before they are decoded: a small file can expand to gigabytes.
MAX_IMAGE_PIXELS = 50_000_000
BATCH = 256  # images per forward pass
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
# Below this recorded accuracy a model is a smoke run, and its confident answers mean little.
TRUSTWORTHY_ACCURACY = 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.predict", description=__doc__)
    add_saved_run_arguments(parser, "use", data_dir=False)
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, ...) or folders")
    parser.add_argument("--top", type=count, default=3, help="(default: %(default)s)")
    parser.add_argument(
        "--resize",
        choices=("squash", "crop"),
        default="squash",
        help="to 32x32: the whole image squashed, or its central square (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def image_paths(arguments: list[str]) -> list[Path]:
    """The files named, and the image files of the folders named (sorted by name)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageInputError(
                    f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            paths += found
        else:
            paths.append(path)
    return paths


def read_image(path: str | Path, resize: str = "squash") -> np.ndarray:
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
            _check_size(image, str(path))
            rgb = to_rgb8(image)
    except Image.DecompressionBombError:
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.device import pick_device
        from fastcifar.saved_run import load_saved_run

        paths = image_paths(args.images)
        images, readable, errors = [], [], []
        for path in paths:  # every file is tried before any model work
            try:
                images.append(read_image(path, args.resize))
                readable.append(path)
            except ImageInputError as error:
                errors.append(str(error))
        if not images:
            more = f" (and {len(errors) - 1} more unreadable)" if len(errors) > 1 else ""
            raise ImageInputError(errors[0] + more)
        if not args.json:
            for error in errors:
                print(f"error: {error}", file=sys.stderr, flush=True)
        device = pick_device(args.device)
        saved = load_saved_run(Path(args.run_dir), device, allow_incomplete=args.allow_incomplete)
        warning = _untrustworthy(saved.summary.final_test_accuracy, args.run_dir)
        if warning and not args.json:
            print(warning, file=sys.stderr, flush=True)
        predictions = _predict(
            saved, np.stack(images), readable, min(args.top, len(saved.class_names))
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "run": str(Path(args.run_dir).resolve()),
                        "warning": warning,
                        "predictions": predictions,
                        "errors": errors,
                    },
                    indent=2,
                )
            )
        else:
            for row in predictions:
                ranked = ", ".join(
                    f"{t['class']} {100 * t['probability']:.1f}%" for t in row["top"]
                )
                print(f"{row['image']}: {ranked}")
        if errors:
            sys.exit(2)

    run_main(run)


def _predict(saved, images: np.ndarray, paths: list[Path], top: int) -> list[dict]:
    from fastcifar.progress import progress

    rows = []
    starts = range(0, len(images), BATCH)
    for start in progress(starts, "predict", unit="batch", nested=True, total=len(starts)):
        probabilities = saved.predict_proba(images[start : start + BATCH])
        for path, row in zip(paths[start : start + BATCH], probabilities, strict=True):
            values, indices = row.topk(top)
            ranked = [
                {"class": saved.class_names[i], "probability": float(p)}
                for p, i in zip(values, indices, strict=True)
            ]
            rows.append({"image": str(path), "top": ranked})
    return rows


def _untrustworthy(accuracy: float | None, run_dir: str) -> str | None:
    if accuracy is None or accuracy >= TRUSTWORTHY_ACCURACY:
        return None
    return (
        f"warning: {run_dir} reached only {100 * accuracy:.1f}% test accuracy (a smoke run?): "
        "its probabilities say little"
    )


if __name__ == "__main__":
    main()
