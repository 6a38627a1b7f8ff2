"""The crawler survives its server (issue 22, item 4): any Retry-After, any charset, any Content-Length
or Location is read as a value or as absent, and a server that drips bytes cannot hold a worker past
the answer's deadline.

A raw socket server on 127.0.0.1 answers each path with the bytes a test scripts, header by header,
so the answers can be what no well-behaved HTTP library would send.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mangacolor.data.scraper import Fetcher, SiteConfig, _content_length, _retry_after, decode_text

PROXY_VARS = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1].decode()
        self.server.hits.append(path)
        answer = self.server.routes.get(path)
        try:
            if answer is None:
                self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            elif callable(answer):
                answer(self.request)
            else:
                self.request.sendall(answer)
        except OSError:  # the client gave up on us: what a deadline is for
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture()
def server(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes: dict[str, bytes | Callable] = {}
    srv.hits: list[str] = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    yield srv
    srv.shutdown()
    srv.server_close()


def _cfg(url: str, **kw) -> SiteConfig:
    base = {"name": "hostile", "base_url": url, "titles": {"t": "t/"}, "chapter_link": "ch", "page_image": "png",
            "rate_limit_per_s": 100.0, "retries": 0, "backoff": 0.0, "timeout_s": 3.0}
    return SiteConfig.model_validate({**base, **kw})


def _answer(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"Connection: close\r\n\r\n" + body


def test_a_retry_after_of_superscript_two_is_read_as_absent(server):
    """Before: `"²".isdigit()` is True, then float("²") raised ValueError and ended the crawl."""
    server.routes["/busy"] = _answer("503 Service Unavailable", {"Retry-After": "²", "Content-Length": "0"})
    resp = Fetcher(_cfg(server.url, retries=1)).get(server.url + "busy")
    assert resp.status == 503 and resp.attempts == 2  # retried after the backoff, not after "²" seconds
    assert server.hits.count("/busy") == 2


@pytest.mark.parametrize("charset", ["idna", "punycode", "base64", "rot13", "nonsense", "utf-8'; x", "hex"])
def test_any_charset_decodes_the_page_as_text(server, charset):
    """Before: `charset=idna` named a codec that refuses errors="replace": UnicodeError ended the crawl."""
    body = "<a href='ch-1'>chapitre é</a>".encode()
    server.routes["/t/"] = _answer("200 OK", {"Content-Type": f"text/html; charset={charset}",
                                              "Content-Length": str(len(body))}, body)
    resp, text = Fetcher(_cfg(server.url)).fetch_text(server.url + "t/")
    assert resp.status == 200 and "ch-1" in text


def test_a_server_dripping_one_byte_at_a_time_cannot_hold_a_worker_past_the_deadline(server):
    """Before: one byte every 1.5 s kept every read under timeout_s (3 s), so one answer held its
    worker for as long as the server liked (65 s for a 40-byte body)."""

    def drip(sock) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 40\r\n\r\n")
        for _ in range(40):
            time.sleep(1.5)
            sock.sendall(b"x")

    def drip_headers(sock) -> None:  # the same, before the headers are even over
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(40):
            time.sleep(1.5)
            sock.sendall(b"X-Slow: 1\r\n")

    server.routes["/slow"] = drip
    server.routes["/slow-headers"] = drip_headers
    fetcher = Fetcher(_cfg(server.url, timeout_s=3.0, deadline_s=2.0))
    for path in ("slow", "slow-headers"):
        start = time.monotonic()
        resp = fetcher.get(server.url + path)
        took = time.monotonic() - start
        assert took < 4.5, (path, took)
        assert resp.error and "2 s deadline" in resp.error and resp.body == b""


def test_a_chunked_answer_cut_by_the_deadline_is_no_answer(server):
    """Without a length, the shut socket looks like the end of the body: the deadline still says it is not."""

    def drip(sock) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n")  # no length: read to close
        for _ in range(20):
            sock.sendall(b"<p>")
            time.sleep(0.5)

    server.routes["/t/"] = drip
    resp, text = Fetcher(_cfg(server.url, deadline_s=1.0)).fetch_text(server.url + "t/")
    assert text is None and "deadline" in resp.error


def test_a_location_that_is_no_url_ends_the_hop_not_the_crawl(server):
    """Before: urllib parsed the Location before our handler saw it: ValueError out of the crawl."""
    server.routes["/moved"] = _answer("302 Found", {"Location": "http://[::1", "Content-Length": "0"})
    resp = Fetcher(_cfg(server.url)).get(server.url + "moved")
    assert resp.status == 302 and "unusable Location" in resp.error


@pytest.mark.parametrize("length", ["²", "-5", "9" * 5000, "1e3", " 12 ", ""])
def test_any_content_length_is_a_length_or_absent(server, length):
    body = b"<a href='ch-1'>x</a>"
    server.routes["/t/"] = _answer("200 OK", {"Content-Type": "text/html", "Content-Length": length}, body)
    resp, text = Fetcher(_cfg(server.url)).fetch_text(server.url + "t/")
    assert resp.status == 200 or resp.error  # an answer or a reason, never an exception


# Digits that str.isdigit() accepts and float()/int() refuse are drawn on purpose (text rarely finds them).
HEADER_TEXT = st.one_of(st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60),
                        st.lists(st.sampled_from("0123456789²³¹"), min_size=1, max_size=8).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(retry_after=st.one_of(HEADER_TEXT, st.integers(-10, 10**30).map(str),
                             st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT"))),
       content_type=st.one_of(HEADER_TEXT, HEADER_TEXT.map(lambda c: f"text/html; charset={c}")),
       length=st.one_of(HEADER_TEXT, st.integers(-(10**40), 10**40).map(str)),
       body=st.binary(max_size=200))
def test_header_values_parse_to_a_value_or_nothing(retry_after, content_type, length, body):
    wait = _retry_after(retry_after)
    assert wait is None or wait >= 0
    n = _content_length({"content-length": length})
    assert n is None or n >= 0
    assert isinstance(decode_text(body, content_type), str)
