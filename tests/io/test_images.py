import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mangacolor.io.images import ImageError, encode_jpeg, encode_png, from_tensor, read_image, to_tensor


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def page(h=40, w=30):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_round_trip_is_exact():
    arr = page()
    assert np.array_equal(read_image(encode_png(arr)), arr)


def test_sixteen_bit_png_is_scaled_not_clipped():
    grey16 = (np.linspace(0, 65535, 40 * 30).reshape(40, 30)).astype(np.uint16)
    data = _png(Image.fromarray(grey16))  # Pillow picks I;16 for uint16
    out = read_image(data, mode="L")
    assert out.shape == (40, 30)
    assert out.min() == 0 and out.max() == 255  # the full range survives, not 255 everywhere
    assert abs(int(out[20, 15]) - round(grey16[20, 15] / 65535 * 255)) <= 1


def test_palette_png_with_transparency_composites_on_white():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent
    rgba[5:10, 5:10] = (255, 0, 0, 255)
    img = Image.fromarray(rgba, "RGBA").convert("P")
    out = read_image(_png(img))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[7, 7]) == (255, 0, 0)


def test_rgba_png_composites_on_white():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 0
    rgba[..., 3] = 128
    out = read_image(_png(Image.fromarray(rgba, "RGBA")))
    assert 120 <= out[0, 0, 0] <= 135  # half black over white paper


def test_cmyk_jpeg_reads_as_rgb():
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, :16] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(arr).convert("CMYK").save(buf, format="JPEG", quality=95)
    out = read_image(buf.getvalue())
    assert out.shape == (32, 32, 3)
    assert out[16, 4, 0] > 150 and out[16, 4, 1] < 90  # still red


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"hello, this is text", "not an image"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
    ],
)
def test_not_an_image(data, reason):
    with pytest.raises(ImageError, match=reason):
        read_image(data)


def test_truncated_png_is_an_error_with_reason():
    data = encode_png(page(200, 200))
    with pytest.raises(ImageError, match="corrupt png"):
        read_image(data[: len(data) // 2])


def test_one_pixel_image_is_rejected():
    with pytest.raises(ImageError, match="too small"):
        read_image(encode_png(np.zeros((1, 1, 3), np.uint8)))


def _bomb_png(w: int, h: int) -> bytes:
    """A valid PNG header claiming w x h pixels with almost no data behind it."""
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(_bomb_png(30_000, 30_000))


def test_grey_mode_none_keeps_grey():
    grey = np.full((20, 20), 77, np.uint8)
    assert read_image(encode_png(grey), mode=None).ndim == 2
    assert read_image(encode_jpeg(page()), mode=None).ndim == 3


def test_tensor_round_trip():
    arr = page()
    t = to_tensor(arr)
    assert t.shape == (3, 40, 30) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(from_tensor(t), arr)
