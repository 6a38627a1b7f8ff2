"""Colour-page detection: what `colorize` copies through instead of colouring again."""

import cv2
import numpy as np

from mangacolor.demo.corpus import render_page
from mangacolor.inference.pages import is_colour_page
from mangacolor.io.images import encode_jpeg, read_image


def test_colour_pages_are_told_from_black_and_white_scans():
    rng = np.random.default_rng(0)
    pages = [render_page(rng, size=(384, 256)) for _ in range(3)]
    for p in pages:
        assert is_colour_page(p.color)
        grey = np.repeat(p.bw[..., None], 3, axis=2)
        assert not is_colour_page(grey)
        yellowed = (grey.astype(np.float32) * np.array([1.0, 0.96, 0.82])).astype(np.uint8)  # old paper, scanner cast
        assert not is_colour_page(yellowed)
        # a black-and-white page saved as a colour JPEG: chroma noise around the ink, no colour
        noisy = read_image(encode_jpeg(cv2.GaussianBlur(yellowed, (3, 3), 0), quality=60), mode="RGB")
        assert not is_colour_page(noisy)
