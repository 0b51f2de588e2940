"""Decode an ImageFolder tree once into uint8 tensors and cache them
outside the (maybe read-only) data root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image

from .images import ImageData


def cache_dir() -> Path:
    """The decoded-image cache: $DRMM_CACHE_DIR, else ~/.cache/drmm_lightning."""
    return Path(os.environ.get("DRMM_CACHE_DIR") or "~/.cache/drmm_lightning").expanduser()


def load_image_folder(directory: Path) -> ImageData:
    """All images under `directory`/<class>/, decoded to one uint8 tensor; cached by path, count
    and mtime, one file per folder (a copy whose files changed replaces its stale cache)."""
    directory = directory.resolve()
    class_names, class_to_index = find_classes(directory)
    try:
        files = make_dataset(directory, class_to_index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError:  # torchvision names the classes, not where they are
        empty = [c for c in class_names if not any(_images_in(directory / c))]
        raise ValueError(
            f"No images in the class folder(s) {', '.join(empty)} of {directory}: every class "
            f"folder needs image files ({', '.join(IMG_EXTENSIONS)})."
        ) from None
    newest = max(os.stat(path).st_mtime_ns for path, _ in files)
    where, stamp = _digest(str(directory)), _digest(f"{len(files)}|{newest}")
    cached = cache_dir() / f"image_folder-{directory.name}-{where}-{stamp}.pt"
    if cached.is_file():
        saved = torch.load(cached, weights_only=True)
        return ImageData(saved["images"], saved["labels"], tuple(saved["class_names"]))
    data = ImageData(
        _decode(files), torch.tensor([label for _, label in files]), tuple(class_names)
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(
        f".{os.getpid()}.tmp"
    )  # ranks may decode at once: write, then rename
    torch.save(
        {"images": data.images, "labels": data.labels, "class_names": list(class_names)}, partial
    )
    partial.replace(cached)
    for stale in cached.parent.glob(f"image_folder-{directory.name}-{where}-*.pt"):
        if stale != cached:  # the same folder, decoded before its files changed: never read again
            stale.unlink(missing_ok=True)
    return data


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _images_in(folder: Path) -> list[Path]:
    """The image files under `folder` (what make_dataset would take)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS)]


def _decode(files: list[tuple[str, int]]) -> torch.Tensor:
    """Decode the files to a (N, C, H, W) uint8 tensor, whatever each file's mode (palette,
    alpha, 1-bit, CMYK, 16-bit): RGB if any file is in colour (3 or 4 channels as stored), else
    grey, each file converted to that by the decoder."""
    colour = any(_read(path).shape[0] >= 3 for path, _ in files)
    mode = ImageReadMode.RGB if colour else ImageReadMode.GRAY
    images = [_read(path, mode) for path, _ in files]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"The images under {Path(files[0][0]).parents[1]} differ in size ({sorted(shapes)[:4]} "
            f"...); image_folder needs one size for all images: resize them beforehand."
        )
    return torch.stack(images)


def _read(path: str, mode: ImageReadMode = ImageReadMode.UNCHANGED) -> torch.Tensor:
    """Decode one image file to uint8 (16-bit images scaled to 8 bits); a ValueError naming the
    file if it cannot be decoded, or decodes to something other than one still image."""
    try:
        image = decode_image(path, mode=mode)
    except (RuntimeError, ValueError, OSError) as error:
        raise ValueError(
            f"Cannot decode image {path} ({error}); remove or replace the file."
        ) from error
    if image.dtype == torch.uint16:  # 16-bit PNG (I;16): 0..65535 onto 0..255, rounded
        image = ((image.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(
            f"Image {path} decodes to {image.dtype} of shape {tuple(image.shape)}, not one "
            "still image of 8 or 16 bits; convert it to an 8-bit grey or RGB PNG, or remove it."
        )
    return image
