"""The hint page (`mangacolor serve`) under hostile uploads (issue 22, items 2 and 3), through the
real server: Gradio's HTTP API, as a browser or a script would call it.

Before: no pixel cap (a 168 KB PNG of 12000×12000 took 44 s and 6.2 GB), no upload cap (200 MB
accepted), every failure shown as a bare "Error", and the colourings written for download never
deleted.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mangacolor.cli import main
from mangacolor.io.images import encode_png
from mangacolor.io.limits import MAX_UPLOAD_BYTES

gradio_client = pytest.importorskip("gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(bundle, tmp_path_factory):
    from mangacolor.serve import close_app, serve

    app, url = serve(str(bundle), port=_free_port(), block=False)
    client = gradio_client.Client(url, verbose=False)
    yield {"app": app, "url": url.rstrip("/"), "client": client, "out": Path(app.mangacolor_out_dir)}
    close_app(app)


def _colorize(page, path: Path):
    from gradio_client import handle_file

    editor = {"background": handle_file(str(path)), "layers": [], "composite": None}
    return page["client"].predict(editor, None, 1, 0, api_name="/run")


def _peak_rss_growth(fn) -> tuple[object, float]:
    """(fn's result or exception, growth of this process's peak RSS in MiB while it ran)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pytest.skip("no /proc/self/clear_refs: peak RSS cannot be reset here")

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        raise KeyError(key)

    base = status("VmRSS:")
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - returned to the test
        result = exc
    return result, (status("VmHWM:") - base) / 1024


def test_a_12000_by_12000_png_is_refused_from_its_header_with_the_clis_line(page, bundle, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.new("L", (12000, 12000), 255).save(big, optimize=True)
    assert big.stat().st_size < 300_000
    result, growth = _peak_rss_growth(lambda: _colorize(page, big))
    assert isinstance(result, gradio_client.exceptions.AppError), result
    shown = str(result)
    assert main(["colorize", str(big), "-o", str(tmp_path / "out.png"), "--model", str(bundle), "--quiet"]) == 1
    cli_line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped")][0]
    assert cli_line == f"skipped {big}: decompression bomb: header claims 12000x12000 pixels (limit 80,000,000)"
    assert shown == cli_line.removeprefix(f"skipped {tmp_path}/")  # the same line, the upload's name for the path
    assert growth < 200, f"peak RSS grew {growth:.0f} MiB"


def test_a_huge_reference_sent_as_a_data_url_is_refused_from_its_header(page, tmp_path):
    """Gradio's image input decodes a `data:` URL itself, never storing it: the upload cap does not see
    it, the pixel check must."""
    import base64

    from gradio_client import handle_file

    big, ok = tmp_path / "big.png", tmp_path / "ok.png"
    Image.new("L", (12000, 12000), 255).save(big, optimize=True)
    ok.write_bytes(encode_png(np.full((64, 48), 200, np.uint8)))
    reference = {"url": "data:image/png;base64," + base64.b64encode(big.read_bytes()).decode(),
                 "meta": {"_type": "gradio.FileData"}}
    editor = {"background": handle_file(str(ok)), "layers": [], "composite": None}
    result, growth = _peak_rss_growth(lambda: page["client"].predict(editor, reference, 1, 0, api_name="/run"))
    assert isinstance(result, gradio_client.exceptions.AppError), result
    assert str(result) == "upload: not a usable reference image (decompression bomb: header claims 12000x12000 pixels (limit 80,000,000))"
    assert growth < 200, f"peak RSS grew {growth:.0f} MiB"


def test_an_upload_over_the_cap_is_refused_by_the_server(page):
    boundary = "mangacolorboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + b"\0" * (MAX_UPLOAD_BYTES + 2**20) + tail
    req = urllib.request.Request(page["url"] + "/gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=120)
    assert refused.value.code in (400, 413)
    assert b"size" in refused.value.read().lower()


@pytest.mark.parametrize("content, expected", [(b"<html>not a page</html>", "not an image"),
                                               (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image")])
def test_a_bad_upload_is_one_line_not_a_bare_error(page, tmp_path, content, expected):
    path = tmp_path / "page.png"
    path.write_bytes(content)
    with pytest.raises(gradio_client.exceptions.AppError) as shown:
        _colorize(page, path)
    message = str(shown.value)
    assert message.startswith("page.png: ") and expected in message and "\n" not in message and message != "Error"


def test_colourings_written_for_download_are_deleted(page, tmp_path):
    ok = tmp_path / "ok.png"
    ok.write_bytes(encode_png(np.full((64, 48), 200, np.uint8)))
    old = page["out"] / "run-old"
    old.mkdir()
    (old / "coloring_s1.png").write_bytes(b"x")
    past = time.time() - 2 * 3600
    os.utime(old, (past, past))
    _colorize(page, ok)
    runs = sorted(p.name for p in page["out"].glob("run-*"))
    assert "run-old" not in runs and len(runs) >= 1  # the old run's files went when a new one came


def test_the_file_routes_refuse_what_is_not_the_pages_own(page):
    """What held and must keep holding: Gradio serves files the page wrote, nothing else."""
    for path in ("/gradio_api/file=/etc/passwd", f"/gradio_api/file={page['out']}/../../../etc/passwd",
                 "/gradio_api/file=../../../../etc/passwd", "/file=/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(page["url"] + path, timeout=30)
        assert refused.value.code in (403, 404), path


def test_closing_the_page_deletes_its_outputs(bundle, tmp_path):
    from mangacolor.serve import close_app, serve

    app, url = serve(str(bundle), port=_free_port(), block=False)
    ok = tmp_path / "ok.png"
    ok.write_bytes(encode_png(np.full((64, 48), 200, np.uint8)))
    _colorize({"client": gradio_client.Client(url, verbose=False)}, ok)
    out = Path(app.mangacolor_out_dir)
    assert list(out.rglob("*.png"))
    close_app(app)
    assert not out.exists()


def test_the_page_writes_nothing_beside_its_code(page):
    """Gradio writes a .pyi beside a module that subclasses one of its components: the page must not."""
    import mangacolor.serve

    assert not Path(mangacolor.serve.__file__).with_suffix(".pyi").exists()
