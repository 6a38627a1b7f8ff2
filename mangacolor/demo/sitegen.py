"""A generated static manga gallery and a local HTTP server to crawl it: the web source's test site.

The paper's data were scraped from the web (§IV-A-1, Appendix B); the tests and the demo exercise
our crawler (`mangacolor.data.scraper`) against this site instead, served on 127.0.0.1 with no
internet. `build_site` writes the static part: `index.html` → one page per title → chapter pages
(each split over two HTML parts) → `<img>` page images, a logo that is not a page, and a
`robots.txt` that forbids `/drafts/` (every title links a preview chapter there). `serve_site` runs
a ThreadingHTTPServer with full ETag / Last-Modified support (304 answers) and the misbehaving
endpoints a real crawl meets, which a trap chapter (`trap_chapter_for=`) links as its pages:

    page-1   a normal page
    page-2   /_special/retry/...   429 with Retry-After: 1 the first time, then the image
    page-3   /_special/slow/...    sleeps `slow_s` before answering (past the crawler's timeout)
    page-4   /_special/html/...    an HTML page sent as Content-Type: image/png
    page-5   /_special/away/...    redirect to another host (http://localhost:<port>/...)
    page-6   /_special/moved/...   redirect to the same host (fine to follow)
    page-7   /drafts/...           forbidden by robots.txt
    page-8   <origin>/../../etc/page-8.png     a path that climbs out of any folder
    page-9   /%2e%2e/%2e%2e/etc/page-9.png     the same, percent-encoded
    page-10  /_special/huge/...    a body larger than any sane cap, without Content-Length
    page-11  /_special/broken/...  503 every time

`faults` (a dict the caller may change while the server runs) makes any path misbehave on demand,
as a flaky server does on a re-crawl: "timeout" (stalls `slow_s`), "reset" (the connection is
reset before an answer), "503" (every time), "429" (every time, Retry-After: 1).

Every request is appended to the caller's `request_log` (monotonic time of arrival, raw path,
headers, status), so tests can check what a crawler actually sent.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import posixpath
import socket
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from mangacolor.io.images import encode_png
from mangacolor.io.store import safe_part

ROBOTS_TXT = "User-agent: *\nDisallow: /drafts/\n"
# Served HTML may name the server's own origin (port 0 is only known at serve time).
ORIGIN_PLACEHOLDER = "{{origin}}"

TRAP_PAGES = [
    "page-1.png",
    "/_special/retry/page-2.png",
    "/_special/slow/page-3.png",
    "/_special/html/page-4.png",
    "/_special/away/page-5.png",
    "/_special/moved/page-6.png",
    "/drafts/page-7.png",
    ORIGIN_PLACEHOLDER + "/../../etc/page-8.png",
    "/%2e%2e/%2e%2e/etc/page-9.png",
    "/_special/huge/page-10.png",
    "/_special/broken/page-11.png",
]


def demo_page(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small manga-like greyscale page as PNG bytes: panel borders, ink strokes, a balloon.

    `size` is (height, width), at least (48, 40).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w), 255, np.uint8)
    split = int(rng.integers(h // 3, 2 * h // 3))
    for y0, y1 in ((3, split - 2), (split + 2, h - 4)):
        cv2.rectangle(img, (3, y0), (w - 4, y1), 0, 1)
        for _ in range(4):
            p = (int(rng.integers(6, w - 6)), int(rng.integers(y0 + 3, max(y0 + 4, y1 - 3))))
            q = (int(rng.integers(6, w - 6)), int(rng.integers(y0 + 3, max(y0 + 4, y1 - 3))))
            cv2.line(img, p, q, int(rng.integers(0, 80)), 1, cv2.LINE_AA)
    center = (int(rng.integers(15, w - 15)), int(rng.integers(12, split - 8)))
    cv2.ellipse(img, center, (10, 6), 0, 0, 360, 255, -1)
    cv2.ellipse(img, center, (10, 6), 0, 0, 360, 0, 1, cv2.LINE_AA)
    cv2.putText(img, str(seed % 100), (6, h - 8), cv2.FONT_HERSHEY_PLAIN, 0.8, 0, 1)
    return encode_png(img)


def _logo() -> bytes:
    img = np.full((24, 24), 255, np.uint8)
    cv2.circle(img, (12, 12), 9, 0, 2, cv2.LINE_AA)
    return encode_png(img)


def demo_pages(titles: list[str], pages_per_title: int = 6, seed: int = 0) -> dict[str, list[bytes]]:
    """Distinct, deterministic pages for each title, for `build_site`."""
    return {t: [demo_page(seed * 10_000 + i * 100 + p) for p in range(pages_per_title)] for i, t in enumerate(titles)}


def demo_color_pages(titles: list[str], pages_per_title: int = 6, seed: int = 0,
                     size: tuple[int, int] | None = None) -> dict[str, list[bytes]]:
    """Colour manga pages drawn by the demo corpus renderer, for a site the demo really ingests.

    Deterministic in (seed, title, page); each title keeps one dominant hue, as a series does.
    `size` is (height, width), default the demo corpus page size.
    """
    from mangacolor.demo.corpus import render_page

    out = {}
    for title in titles:
        key = zlib.crc32(title.encode("utf-8"))
        hue = float(key % 360)
        out[title] = [
            encode_png(render_page(np.random.default_rng(np.random.SeedSequence([seed, key, p])), size=size, hue=hue).color)
            for p in range(pages_per_title)
        ]
    return out


def title_slug(title: str) -> str:
    return safe_part(title).lower()


def _html(title: str, body: str) -> str:
    return (
        f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>\n"
        f"<body>\n<img class=\"logo\" src=\"/static/logo.png\" alt=\"site logo\">\n"
        f"<a href=\"/index.html\">Home</a> <a href=\"/about.html#team\">About</a>\n{body}\n</body></html>\n"
    )


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _chapter_html(title: str, number: int, images: list[str], next_chapter: str | None) -> tuple[str, str]:
    """Two HTML parts of one chapter: a reader meets its pages over several documents."""
    half = (len(images) + 1) // 2
    img = lambda refs: "\n".join(f'<p><img src="{html.escape(r)}" alt="page"></p>' for r in refs)  # noqa: E731
    nav = f'<a href="{next_chapter}">next chapter</a>' if next_chapter else ""
    first = _html(f"{title} {number}", f"<h1>Chapter {number}</h1>\n{img(images[:half])}\n"
                                       f'<a href="part-2.html">more pages</a>\n{nav}')
    second = _html(f"{title} {number} (2)", f"<h1>Chapter {number}, part 2</h1>\n{img(images[half:])}\n"
                                            f'<a href="index.html">back</a> <a href="part-2.html">this part</a>\n{nav}')
    return first, second


def build_site(
    root_dir: str | Path,
    pages: Mapping[str, list[bytes]],
    *,
    pages_per_chapter: int = 3,
    trap_chapter_for: str | None = None,
) -> dict[str, str]:
    """Write the static site under `root_dir`; returns each title's start path (relative to the site root).

    A title's pages are cut into chapters of `pages_per_chapter`; the title page lists them newest
    first (as galleries do) followed by a preview chapter under the robots-forbidden `/drafts/`.
    `trap_chapter_for` names a title that gets one more chapter whose pages are `TRAP_PAGES`.
    """
    root = Path(root_dir)
    _write(root / "robots.txt", ROBOTS_TXT)
    _write(root / "static" / "logo.png", _logo())
    _write(root / "about.html", _html("About", "<p>A generated gallery for tests.</p>"))
    starts = {t: f"titles/{title_slug(t)}/" for t in pages}
    slugs = [title_slug(t) for t in pages]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"build_site: titles {list(pages)} collide after slugging ({slugs}); rename one")
    index_links = "\n".join(f'<li><a href="/{starts[t]}">{html.escape(t)}</a></li>' for t in pages)
    _write(root / "index.html", _html("Gallery", f"<ul>\n{index_links}\n</ul>"))

    for t_index, (title, images) in enumerate(pages.items()):
        slug = title_slug(title)
        title_dir = root / "titles" / slug
        chapters = [images[i : i + pages_per_chapter] for i in range(0, len(images), pages_per_chapter)]
        refs_per_chapter: list[list[str]] = []
        for c, chapter in enumerate(chapters, start=1):
            for p, data in enumerate(chapter, start=1):
                _write(title_dir / f"ch-{c:03d}" / f"page-{p}.png", data)
            refs_per_chapter.append([f"page-{p}.png" for p in range(1, len(chapter) + 1)])
        if title == trap_chapter_for:
            trap_dir = title_dir / f"ch-{len(chapters) + 1:03d}"
            _write(trap_dir / "page-1.png", images[0] if images else demo_page(424_242))
            refs_per_chapter.append(list(TRAP_PAGES))
        n = len(refs_per_chapter)
        for c, refs in enumerate(refs_per_chapter, start=1):
            nxt = f"../ch-{c + 1:03d}/" if c < n else None
            first, second = _chapter_html(title, c, refs, nxt)
            _write(title_dir / f"ch-{c:03d}" / "index.html", first)
            _write(title_dir / f"ch-{c:03d}" / "part-2.html", second)

        # A preview chapter the robots.txt forbids; its files exist, so a crawler that ignored
        # robots.txt would visibly fetch them.
        drafts = root / "drafts" / slug / f"ch-{n + 1:03d}"
        _write(drafts / "page-1.png", images[0] if images else demo_page(434_343))
        _write(drafts / "index.html", _html(f"{title} preview", '<img src="page-1.png" alt="page">'))
        _write(root / "drafts" / "page-7.png", demo_page(454_545))

        chapter_links = "\n".join(
            f'<li><a href="ch-{c:03d}/">Chapter {c}</a></li>' for c in range(n, 0, -1)
        )
        other = slugs[(t_index + 1) % len(slugs)]
        _write(title_dir / "index.html", _html(title, (
            f"<h1>{html.escape(title)}</h1>\n<ul>\n{chapter_links}\n"
            f'<li><a href="/drafts/{slug}/ch-{n + 1:03d}/">Chapter {n + 1} (preview)</a></li>\n</ul>\n'
            f'<a href="/titles/{other}/">you may also like</a> <a href="ch-001/#top">start reading</a>'
        )))
    return starts


@dataclass
class ServedRequest:
    """One request as the server saw it; `t` is time.monotonic() on arrival."""

    t: float
    path: str
    headers: dict[str, str]
    status: int | None = None
    extra: dict = field(default_factory=dict)


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def _not_modified(headers, etag: str, mtime: float) -> bool:
    """RFC 9110 §13.1: If-None-Match decides when present; If-Modified-Since only otherwise."""
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = headers.get("If-Modified-Since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since
    return False


def _make_handler(root: Path, log: list[ServedRequest], slow_s: float, huge_bytes: int, png: bytes,
                  faults: Mapping[str, str] | None = None):
    counts: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "mangacolor-sitegen/1"

        def log_message(self, format, *args):  # noqa: A002 - the tests read `request_log`, not stderr
            pass

        def do_GET(self) -> None:
            entry = ServedRequest(time.monotonic(), self.path, dict(self.headers.items()))
            log.append(entry)
            try:
                entry.status = self._route()
            except (BrokenPipeError, ConnectionResetError):
                entry.extra["client_gone"] = True

        def _origin(self, host: str = "127.0.0.1") -> str:
            return f"http://{host}:{self.server.server_address[1]}"

        def _send(self, status: int, body: bytes = b"", ctype: str | None = None, headers: dict | None = None,
                  length: bool = True) -> int:
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)
            return status

        def _route(self) -> int:
            raw = self.path.split("?", 1)[0]
            fault = (faults or {}).get(raw)
            if fault == "timeout":
                time.sleep(slow_s)
            elif fault == "reset":
                # SO_LINGER 0 then close: the client sees ECONNRESET, no HTTP answer at all.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                return 0
            elif fault == "503":
                return self._send(503, b"maintenance", "text/plain")
            elif fault == "429":
                return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            if raw.startswith("/_special/"):
                return self._special(raw)
            if ".." in raw or "%2e" in raw.lower():
                # Stands in for a file outside the web root: a client must never map it to a local path.
                return self._send(200, png, "image/png")
            return self._static(raw)

        def _special(self, raw: str) -> int:
            kind = raw.split("/")[2]
            name = posixpath.basename(raw)
            if kind == "retry":
                with lock:
                    counts[raw] = counts.get(raw, 0) + 1
                    first = counts[raw] == 1
                if first:
                    return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
                return self._send(200, png, "image/png")
            if kind == "slow":
                time.sleep(slow_s)
                return self._send(200, png, "image/png")
            if kind == "html":
                body = b"<!doctype html><html><body><h1>Please log in</h1></body></html>"
                return self._send(200, body, "image/png")
            if kind == "away":
                return self._send(302, b"", None, {"Location": f"{self._origin('localhost')}/_special/landing/{name}"})
            if kind == "moved":
                return self._send(301, b"", None, {"Location": f"/_special/landing/{name}"})
            if kind == "landing":
                return self._send(200, png, "image/png")
            if kind == "huge":
                # No Content-Length: the client can only notice the size while reading.
                self._send(200, b"", "image/png", length=False)
                chunk = b"\0" * 65536
                self.wfile.write(png[:16])
                for _ in range(huge_bytes // len(chunk) + 1):
                    self.wfile.write(chunk)
                return 200
            if kind == "broken":
                return self._send(503, b"maintenance", "text/plain")
            return self._send(404, b"no such endpoint", "text/plain")

        def _static(self, raw: str) -> int:
            rel = posixpath.normpath(urllib.parse.unquote(raw)).lstrip("/")
            path = (root / rel).resolve()
            if not path.is_relative_to(root):
                return self._send(404, b"not found", "text/plain")
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                return self._send(404, b"not found", "text/plain")
            data = path.read_bytes()
            if path.suffix == ".html":
                data = data.replace(ORIGIN_PLACEHOLDER.encode(), self._origin().encode())
            ctype = {".html": "text/html; charset=utf-8", ".png": "image/png", ".txt": "text/plain"}.get(
                path.suffix, "application/octet-stream")
            mtime = path.stat().st_mtime
            etag = _etag(data)
            validators = {"ETag": etag, "Last-Modified": email.utils.formatdate(mtime, usegmt=True)}
            if _not_modified(self.headers, etag, mtime):
                return self._send(304, b"", None, validators, length=False)
            return self._send(200, data, ctype, validators)

    return Handler


@contextmanager
def serve_site(
    root_dir: str | Path,
    *,
    request_log: list[ServedRequest] | None = None,
    slow_s: float = 3.0,
    huge_bytes: int = 6 * 2**20,
    faults: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Serve `root_dir` on 127.0.0.1 (a free port) in a daemon thread; yields the base URL.

    Requests are appended to `request_log` when one is given. `slow_s` is how long the slow
    endpoint stalls; `huge_bytes` how much the oversized endpoint sends; `faults` maps raw paths to
    a misbehaviour (see the module docstring), read on every request.
    """
    root = Path(root_dir).resolve()
    if not (root / "index.html").is_file():
        raise FileNotFoundError(
            f"serve_site: {root}/index.html is missing; call build_site({str(root_dir)!r}, ...) first")
    log = request_log if request_log is not None else []
    handler = _make_handler(root, log, slow_s, huge_bytes, demo_page(777_777), faults)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a stalled handler must not keep the test process alive
    thread = threading.Thread(target=server.serve_forever, name="sitegen-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
