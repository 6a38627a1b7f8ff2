"""`mangacolor serve`: the hint page driven in a real browser (Debian's Chromium through Playwright).

A user uploads a demo page, colours it once, paints a red stroke across the middle of the page,
colours it again and downloads the result: the colouring changed under the stroke and hardly
anywhere else. The page loads and works with every request outside the server refused (no CDN
fonts, no analytics). The screenshot is kept as a test artifact ($MANGACOLOR_TEST_ARTIFACTS or the
test's tmp folder) and, with MANGACOLOR_UPDATE_DOCS=1, written to docs/hint-page.png for the README.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from mangacolor.cli import main
from mangacolor.demo.corpus import render_page
from mangacolor.io.images import encode_png, read_image
from tests.eval.bundles import tiny_bundle

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_serve_with_a_missing_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "not a mangacolor model bundle" in err and "Traceback" not in err


def test_serve_binds_localhost_by_default():
    from mangacolor.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"


def test_painted_layer_alpha_becomes_the_hints_white_included():
    from mangacolor.serve import page_and_hints

    page = np.full((40, 30, 4), 255, np.uint8)
    page[10:20, :, :3] = 0
    layer = np.zeros((40, 30, 4), np.uint8)
    layer[5:8, 5:8] = (255, 255, 255, 255)  # a white hint: still a hint
    layer[30:33, 20:25] = (200, 20, 20, 128)  # a soft brush edge counts too
    grey, hints = page_and_hints({"background": page, "layers": [layer], "composite": page})
    assert grey.shape == (40, 30) and grey[15, 0] == 0 and grey[0, 0] == 255
    assert hints.shape == (40, 30, 4)
    assert (hints[5:8, 5:8] == 255).all()
    assert (hints[30:33, 20:25] == (200, 20, 20, 255)).all()
    assert hints[..., 3].sum() == 255 * (9 + 15)
    assert page_and_hints({"background": page, "layers": [np.zeros_like(layer)]})[1] is None
    with pytest.raises(ValueError, match="upload a page"):
        page_and_hints({"background": None, "layers": []})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(page, link) -> np.ndarray:
    with page.expect_download() as info:
        link.click()
    return read_image(Path(info.value.path()).read_bytes(), mode="RGB")


@pytest.mark.timeout(600)
def test_hint_page_in_a_browser_paint_a_hint_and_download(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    from mangacolor.serve import serve

    bundle = tiny_bundle(tmp_path / "model", kind="random", drafting=True)
    page_file = tmp_path / "page.png"
    bw = render_page(np.random.default_rng(0)).bw
    page_file.write_bytes(encode_png(bw))
    h, w = bw.shape

    app, url = serve(str(bundle), host="127.0.0.1", port=_free_port(), block=False)
    assert url.startswith("http://127.0.0.1:")
    outside: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            tab = browser.new_page(viewport={"width": 1400, "height": 1150}, accept_downloads=True)

            def only_local(route):
                if route.request.url.startswith(url.rstrip("/")):
                    route.continue_()
                else:  # the page must not need the internet
                    outside.append(route.request.url)
                    route.abort()

            tab.route("**/*", only_local)
            tab.goto(url)
            tab.wait_for_selector("#colorize")
            with tab.expect_file_chooser() as chooser:
                tab.get_by_text("Upload an image").click()
            chooser.value.set_files(str(page_file))
            tab.wait_for_function("document.querySelector('#page-editor .zoom-number span')?.textContent?.includes('%')")
            tab.locator("#samples input[type=number]").fill("2")
            tab.locator("#samples input[type=number]").press("Enter")

            def colorize(run: int) -> list[np.ndarray]:
                tab.locator("#colorize").click()
                links = tab.locator("#downloads a")
                tab.wait_for_function(f"document.querySelectorAll('#downloads a').length >= 2 && "
                                      f"[...document.querySelectorAll('#downloads a')].every(a => a.href.includes('_r{run:03d}_'))",
                                      timeout=60_000)
                return [_fetch(tab, links.nth(k)) for k in range(2)]

            plain = colorize(1)

            # a red stroke across the middle of the page (the brush is selected after an upload)
            time.sleep(0.5)
            zoom = float(tab.locator("#page-editor .zoom-number span").text_content().strip("% ")) / 100
            canvas = max((c.bounding_box() for c in tab.locator("#page-editor canvas").all()),
                         key=lambda b: b["width"] * b["height"])
            cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            half = 0.2 * w * zoom
            tab.mouse.move(cx - half, cy)
            tab.mouse.down()
            for k in range(1, 21):
                tab.mouse.move(cx - half + 2 * half * k / 20, cy)
            tab.mouse.up()

            hinted = colorize(2)
            shot = tmp_path / "hint-page.png"
            tab.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        app.close()

    assert outside == [], f"the page asked the internet for {outside[:3]}"
    for img in plain + hinted:
        assert img.shape == (h, w, 3)
    assert np.abs(plain[0].astype(int) - plain[1].astype(int)).mean() > 0.5  # two different samples
    diff = np.abs(hinted[0].astype(int) - plain[0].astype(int)).sum(axis=2)
    stroke = diff[h // 2 - 4: h // 2 + 5, int(0.35 * w): int(0.65 * w)]
    far = diff[: h // 4]
    assert stroke.mean() > 5 and stroke.mean() > 10 * (far.mean() + 0.1), (stroke.mean(), far.mean())

    artifacts = Path(os.environ.get("MANGACOLOR_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    if artifacts != tmp_path:
        shutil.copy(shot, artifacts / "hint-page.png")
    if os.environ.get("MANGACOLOR_UPDATE_DOCS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / "hint-page.png")
