"""`mangacolor serve`: a hint page in the browser (Gradio).

Upload a page, paint colour hints over it with a brush, optionally pick a reference image or ask
for several sampled colourings, and see the colourings side by side, each downloadable as a PNG.

The page talks to the model through the Python API's `Colorizer` (mangacolor/inference/api.py), loaded
from a bundle folder, a `models:/` URI, or by default the registry's champion, else its candidate.
Painted hints: every pixel of the editor's drawing layers with alpha > 0 is a hint of that pixel's
colour (white included), i.e. the RGBA hint image of `mangacolor colorize --hints`.

It binds 127.0.0.1 unless told otherwise, never opens a share link, sends no analytics and uses
the system's fonts, so it works on a machine without internet.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

# Before Gradio is imported anywhere: no usage reports to the internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MAX_SAMPLES = 8
# Fonts the browser already has: the default theme would fetch Google Fonts.
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif"]
MONO_FONTS = ["ui-monospace", "DejaVu Sans Mono", "monospace"]


# ----------------------------------------------------------------------------------------------
# Editor value -> page and hints


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:  # transparent parts of an uploaded page are paper
        a = img[..., 3:].astype(np.float32) / 255
        return (img[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)
    return img[..., :3]


def page_and_hints(editor: dict | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Gradio ImageEditor value -> (grey page uint8 (H,W), RGBA hints or None).

    The page is the editor's background; the hints are its drawing layers, flattened (later layers
    on top), each painted pixel (alpha > 0) a hint of its colour.
    """
    import cv2

    if not editor or editor.get("background") is None:
        raise ValueError("upload a page first")
    page = cv2.cvtColor(_rgb(np.asarray(editor["background"])), cv2.COLOR_RGB2GRAY)
    h, w = page.shape
    hints = np.zeros((h, w, 4), np.uint8)
    for layer in editor.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[2] != 4:
            continue
        if layer.shape[:2] != (h, w):
            layer = cv2.resize(layer, (w, h), interpolation=cv2.INTER_NEAREST)
        on = layer[..., 3] > 0
        hints[on, :3] = layer[on, :3]
        hints[on, 3] = 255
    return page, (hints if hints[..., 3].any() else None)


# ----------------------------------------------------------------------------------------------
# The page


def build_app(colorizer, out_dir: str | Path | None = None):
    """The Gradio Blocks of the hint page (not launched) around `colorizer`, a `mangacolor.inference.Colorizer`."""
    import gradio as gr

    from mangacolor.inference.pages import InputError

    from mangacolor.io.images import encode_png

    out_root = Path(out_dir or tempfile.mkdtemp(prefix="mangacolor-serve-"))
    out_root.mkdir(parents=True, exist_ok=True)
    counter = {"n": 0}

    def run(editor, reference, samples, seed):
        try:
            page, hints = page_and_hints(editor)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        samples = int(samples or 1)
        if reference is not None and not colorizer.takes_reference:
            raise gr.Error("this model has no inversion encoder, so it cannot take colours from a reference")
        ref = _rgb(np.asarray(reference)) if reference is not None else None
        seed = None if seed in (None, "") else int(seed)
        try:
            out = colorizer.colorize(page, hints=hints, reference=ref, samples=samples, seed=seed)
        except InputError as exc:
            raise gr.Error(str(exc)) from None
        images = out if isinstance(out, list) else [out]
        counter["n"] += 1
        files = []
        for k, img in enumerate(images, 1):
            path = out_root / f"coloring_r{counter['n']:03d}_s{k}.png"
            path.write_bytes(encode_png(img))
            files.append(str(path))
        captions = [(f, f"sample {k}" + (" (hinted)" if hints is not None else "")) for k, f in enumerate(files, 1)]
        note = f"{len(files)} coloring(s); {'hints from the painted strokes' if hints is not None else 'no hints painted'}"
        return captions, files, note

    with gr.Blocks(title="mangacolor hints", analytics_enabled=False) as app:
        gr.Markdown("## mangacolor: colour a page\nUpload a black-and-white page, paint colour hints with the "
                    "brush where you want a colour, then **Colorize**.")
        with gr.Row():
            with gr.Column(scale=3):
                editor = gr.ImageEditor(
                    label="page and hints", type="numpy", image_mode="RGBA", sources=["upload", "clipboard"],
                    brush=gr.Brush(default_size=12, colors=["#e02020", "#2060e0", "#20a040", "#f0c020", "#ffffff"],
                                   default_color="#e02020", color_mode="defaults"),
                    layers=False, transforms=(), format="png", elem_id="page-editor", height=560,
                )
            with gr.Column(scale=2):
                reference = gr.Image(label="reference colours (optional)", type="numpy", sources=["upload"],
                                     elem_id="reference")
                samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="samples", elem_id="samples")
                seed = gr.Number(value=0, precision=0, label="sampling seed", elem_id="seed")
                button = gr.Button("Colorize", variant="primary", elem_id="colorize")
                note = gr.Markdown(elem_id="note")
        gallery = gr.Gallery(label="colorings", columns=4, height="auto", format="png", elem_id="colorings",
                             object_fit="contain",
                             buttons=["download", "fullscreen"])
        files = gr.File(label="download", file_count="multiple", elem_id="downloads")
        button.click(run, [editor, reference, samples, seed], [gallery, files, note])
    app.mangacolor_out_dir = out_root
    return app


def serve(model: str | None = None, host: str = "127.0.0.1", port: int | None = None, device: str = "cpu",
          mode: str = "exact", block: bool = True):
    """Load the model and start the hint page; returns (app, url) when `block` is False."""
    from mangacolor.inference.api import Colorizer

    colorizer = Colorizer.load(model, device=device, mode=mode)  # a bad --model fails before Gradio loads
    import gradio as gr

    app = build_app(colorizer)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    _, url, _ = app.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=True,
                           prevent_thread_lock=True, theme=theme, ssr_mode=False, footer_links=[],
                           allowed_paths=[str(app.mangacolor_out_dir)])
    print(f"mangacolor hint page on {url} (Ctrl-C to stop)", flush=True)
    if not block:
        return app, url
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return app, url
