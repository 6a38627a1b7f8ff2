"""The one image reader and writer of mangacolor.

Every stage reads pages through `read_image`, so every stage gets the same answer for the odd
files people actually have: 16-bit PNGs, palette and alpha PNGs, CMYK JPEGs, EXIF-rotated phone
scans. What cannot be a page (truncated or empty files, text named `.png`, decompression bombs,
degenerate sizes) raises `ImageError` with a reason that ends up in the manifest, never a crash.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mangacolor.io.limits import MAX_FILE_BYTES, MAX_PIXELS, Refused, read_regular

if TYPE_CHECKING:  # torch only for the two tensor helpers: reading a page must not import it (Dagster runs, the sensor)
    import torch

MIN_SIDE = 8

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}


class ImageError(ValueError):
    """A file that cannot be used as a page; `reason` is short and goes into manifests."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def sniff_format(data: bytes) -> str | None:
    """The image format from magic bytes, or None for anything that is not an image we read."""
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _to_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to a uint8 RGB array, scaling 16-bit data rather than clipping it."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(np.rint(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.rint(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas of a page are paper: composite onto white, not black.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if img.mode == "CMYK":
        return np.asarray(img.convert("RGB"))
    return np.asarray(img.convert("RGB"))


def read_image(source: bytes | str | Path, mode: str | None = "RGB") -> np.ndarray:
    """Decode an image file or its bytes to a uint8 array (HxWx3 for "RGB", HxW for "L").

    `mode=None` keeps grey images grey and colour images RGB. `mode="RGBA"` keeps the alpha channel
    (HxWx4; 255 where the file has none) instead of compositing onto white: hint images need it. Raises ImageError for anything that
    is not a usable page; the message is the reason recorded in manifests.
    """
    if isinstance(source, (str, Path)):
        try:
            data = read_regular(source, MAX_FILE_BYTES, "page image")
        except Refused as exc:
            raise ImageError(exc.reason) from None
        except OSError as exc:
            raise ImageError(f"unreadable file: {exc.strerror or exc}") from exc
    else:
        data = bytes(source)
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        head = data[:64].lstrip().lower()
        kind = "HTML" if head.startswith((b"<!doctype html", b"<html")) else "not an image"
        raise ImageError(f"{kind}: unknown magic bytes {data[:8]!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, checked next
            img = Image.open(io.BytesIO(data))
            _check_size(*img.size)
            img.load()
            img = ImageOps.exif_transpose(img)
            is_grey = img.mode in ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F") or (
                img.mode == "P" and _palette_is_grey(img)
            )
            if mode == "RGBA" and (img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)):
                return np.array(img.convert("RGBA"), dtype=np.uint8, order="C")
            rgb = _to_uint8(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL names the BytesIO by its address: without it the reason, so the manifest's version, is stable.
        raise ImageError(f"corrupt {fmt}: {re.sub(r' <[^<>]* at 0x[0-9a-fA-F]+>', '', str(exc))}") from exc
    except (MemoryError, RecursionError) as exc:
        raise ImageError(f"corrupt {fmt}: decoding needs more than we give a page ({type(exc).__name__})") from exc
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise anything on crafted bytes; it is still a bad page
        raise ImageError(f"corrupt {fmt}: {type(exc).__name__}: {exc}") from exc
    if mode == "RGBA":
        return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    if mode == "L" or (mode is None and is_grey):
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    # PIL hands out read-only buffers; callers own the page they read.
    return rgb if rgb.flags.writeable and rgb.flags.c_contiguous else np.array(rgb, order="C")


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(f"decompression bomb: header claims {width}x{height} pixels (limit {MAX_PIXELS:,})")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"too small: {width}x{height} (pages need at least {MIN_SIDE} px a side)")


def header_size(source: bytes | str | Path) -> tuple[int, int]:
    """(width, height) from an image file's header, nothing decoded: ImageError for what is no image,
    or claims more pixels than `MAX_PIXELS` (the check `read_image` makes before it decodes), for a
    reader that decodes by other means (Gradio's upload components)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, checked next
            with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as img:
                _check_size(*img.size)
                return img.size
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"decompression bomb: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises anything on crafted bytes
        raise ImageError(f"not an image: {type(exc).__name__}: {re.sub(r' <[^<>]* at 0x[0-9a-fA-F]+>', '', str(exc))}") from exc


def _palette_is_grey(img: Image.Image) -> bool:
    pal = np.asarray(img.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    return bool(len(pal)) and bool(np.all(pal[:, 0] == pal[:, 1]) and np.all(pal[:, 1] == pal[:, 2]))


def encode_png(arr: np.ndarray, compression: int = 3) -> bytes:
    """PNG bytes of a uint8 grey or RGB array; deterministic for the same array."""
    arr = np.ascontiguousarray(arr)
    bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ImageError(f"could not encode array of shape {arr.shape} as PNG")
    return buf.tobytes()


def encode_jpeg(arr: np.ndarray, quality: int = 92) -> bytes:
    arr = np.ascontiguousarray(arr)
    bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError(f"could not encode array of shape {arr.shape} as JPEG")
    return buf.tobytes()


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float CxHxW in [-1, 1] (the range every network here uses)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t.float().div(127.5).sub(1.0)


def from_tensor(t: torch.Tensor) -> np.ndarray:
    """float CxHxW in [-1, 1] -> uint8 HxW (1 channel) or HxWx3."""
    import torch

    t = t.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).contiguous().numpy()


def resize_long_side(arr: np.ndarray, long_side: int) -> np.ndarray:
    """Area-downscale (or cubic-upscale) so the longer side is `long_side`."""
    h, w = arr.shape[:2]
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def thumbnail_grid(images: list[np.ndarray], height: int = 128, pad: int = 4) -> np.ndarray:
    """Side-by-side strip of images scaled to one height: what asset metadata shows."""
    tiles = []
    for im in images:
        rgb = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im
        h, w = rgb.shape[:2]
        tiles.append(cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA))
        tiles.append(np.full((height, pad, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1) if tiles else np.full((height, height, 3), 255, np.uint8)
