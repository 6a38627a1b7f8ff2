"""The `web` source: a polite, resumable crawler for manga galleries (behind the `scraped_pages` asset).

The paper built its training set by web scraping (§IV-A-1, Appendix B). Here a site is data, not
code: a `SiteConfig` (one YAML file per site under `configs/sites/`) names each title's start page,
which links on it lead to chapters, which links inside a chapter lead to more of its pages, which
images are pages and how they are ordered. A second site needs a new description, never new code.

Politeness is built into the one place requests are sent (`Fetcher`): robots.txt is read once per
host and obeyed, request starts to a host are spaced by `1 / rate_limit_per_s` (or robots.txt's
Crawl-delay when longer) with at most `concurrency` requests in flight, every request says who we
are in its User-Agent, 429 and 5xx answers are retried with exponential backoff (a Retry-After
header wins and holds back the whole host), and everything has a timeout, a size cap and a total
deadline (a server dripping one byte at a time never holds a worker past `deadline_s`). Header
values are a stranger's text too: a Retry-After, Content-Length, charset or Location that means
nothing is read as if it were absent, never as a reason to stop the crawl.

A re-crawl never loses what it has: when refreshing a page that was good before meets a transient
failure (a timeout, a reset connection, a 5xx, a 429 after its retries), the last good copy stays,
still `ok`, and `refresh_error` records why it could not be refreshed. Only a definite answer (a
404, content that is not an image) replaces a good page. One crawl per crawl folder runs at a time
(`crawl.lock`, an `fcntl` lock the kernel drops when its holder dies): a second launch fails with a
message naming the running one, or waits (`wait_s`), so two launches never double the request rate
or remove each other's files.

A crawl is cheap to repeat and safe to interrupt. `out_dir/crawl.sqlite` keeps one row per URL
(ETag, Last-Modified, sha256, local file, status), so a re-run sends conditional requests and
downloads only what changed; a row is committed as soon as its page is done, and an interrupted
crawl of a title resumes its unfinished run without sending a single request for a finished page.

Everything a site sends is untrusted: a page must announce an image Content-Type, start with
PNG/JPEG/WebP/GIF magic bytes and decode; redirects are followed by hand, each hop checked against
`allowed_hosts` and robots.txt; local file names are a hash of the URL plus an extension chosen
from the magic bytes, so no part of a URL ever reaches the filesystem. A page that fails any check
is quarantined with its reason and the crawl goes on.
"""

from __future__ import annotations

import codecs
import email.utils
import fcntl
import functools
import hashlib
import json
import http.client
import importlib.metadata
import logging
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from tqdm import tqdm
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mangacolor.io.images import ImageError, read_image, sniff_format
from mangacolor.io.store import Store, safe_part, sha256_bytes

log = logging.getLogger(__name__)

PROJECT_URL = "https://github.com/mangacolor/mangacolor"
ROBOTS_AGENT = "mangacolor-scraper"  # the product token robots.txt rules are matched against


def _version() -> str:
    try:
        return importlib.metadata.version("mangacolor")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"{ROBOTS_AGENT}/{_version()} (+{PROJECT_URL})"

# Page formats we keep, by `sniff_format` name, with their Content-Type and file extension.
IMAGE_FORMATS = {"png": ("image/png", "png"), "jpeg": ("image/jpeg", "jpg"),
                 "webp": ("image/webp", "webp"), "gif": ("image/gif", "gif")}
# CDNs often label every blob as octet-stream; the magic bytes then decide.
GENERIC_TYPES = {"application/octet-stream", "binary/octet-stream"}
RETRY_STATUSES = {429, 500, 502, 503, 504}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
MAX_RETRY_AFTER_S = 120.0  # a server asking for longer is treated as a refusal, not a pause
MAX_PARTS_PER_CHAPTER = 200  # HTML documents followed inside one chapter
ERROR_BODY_BYTES = 64 * 1024  # what we read of a non-200 answer before dropping it

Order = Literal["document", "number"]


class CrawlError(RuntimeError):
    """The crawl of a title cannot start or go on (its start page is unreadable, a bad config)."""


# --- the site description ----------------------------------------------------------------------


class SiteConfig(BaseModel):
    """A declarative description of one gallery site; patterns are regexes searched in absolute URLs.

    `chapter_order: number` sorts chapters by the pattern's named group `chapter` (chapters with
    no number keep their place after the numbered ones); `page_order: number` sorts pages by the
    group `page`. `document` keeps the order links appear in. Titles map a title name to its start
    page, absolute or relative to `base_url`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_url: str
    user_agent: str = USER_AGENT
    rate_limit_per_s: float = Field(1.0, gt=0, description="request starts per second to one host")
    concurrency: int = Field(2, ge=1, le=16, description="requests in flight to one host")
    timeout_s: float = Field(30.0, gt=0, description="to connect, and for each wait on the server")
    deadline_s: float | None = Field(None, gt=0, description="most seconds one answer may take in all, connect "
                                                              "to last byte (default: 4 × timeout_s)")
    max_bytes: int = Field(20 * 2**20, gt=0, description="largest file kept")
    retries: int = Field(3, ge=0, le=10, description="extra attempts on 429, 5xx, timeouts")
    backoff: float = Field(1.0, ge=0, description="first retry delay in seconds, doubled per attempt")
    max_redirects: int = Field(5, ge=0, le=20)
    allowed_hosts: list[str] = Field(default_factory=list, description="hosts besides base_url's")
    titles: dict[str, str]
    chapter_link: str
    chapter_order: Order = "document"
    page_link: str | None = Field(None, description="links inside a chapter to more of its HTML parts")
    page_image: str
    page_order: Order = "document"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {v!r}")
        return v if v.endswith("/") else v + "/"

    @field_validator("chapter_link", "page_link", "page_image")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc}): {v!r}") from exc
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        return [h.strip().lower() for h in v]

    @model_validator(mode="after")
    def _orders_have_groups(self) -> SiteConfig:
        for pattern, order, group, name in ((self.chapter_link, self.chapter_order, "chapter", "chapter_link"),
                                            (self.page_image, self.page_order, "page", "page_image")):
            if order == "number" and group not in re.compile(pattern).groupindex:
                raise ValueError(f"{name} is ordered by number but has no (?P<{group}>...) group: {pattern!r}")
        if not self.titles:
            raise ValueError("titles is empty: map each title to its start page")
        for title in self.titles:
            host = urllib.parse.urlsplit(self.start_url(title)).hostname
            if (host or "").lower() not in self.hosts():
                raise ValueError(f"title {title!r} starts on host {host!r}, not base_url's nor in allowed_hosts")
        return self

    def deadline(self) -> float:
        return self.deadline_s if self.deadline_s is not None else 4 * self.timeout_s

    def hosts(self) -> set[str]:
        return {urllib.parse.urlsplit(self.base_url).hostname.lower(), *self.allowed_hosts}

    def start_url(self, title: str) -> str:
        if title not in self.titles:
            raise KeyError(f"site {self.name!r} has no title {title!r}; known: {sorted(self.titles)}")
        return urllib.parse.urljoin(self.base_url, self.titles[title])

    def with_base_url(self, base_url: str) -> SiteConfig:
        """The same site served elsewhere (the generated test site binds a free port)."""
        return SiteConfig.model_validate({**self.model_dump(), "base_url": base_url})


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and validate a site description; errors name the file and what to fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"site description {path} not found; see configs/sites/demo_site.yaml for the format") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of site settings, got {type(raw).__name__}")
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid site description:\n{exc}") from exc


# --- finding chapters and pages in HTML ---------------------------------------------------------


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[str] = []
        self.images: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v}
        if tag == "a" and "href" in a:
            self.anchors.append(a["href"])
        elif tag == "img":
            # Lazy-loading galleries put the real page in data-src and a placeholder in src.
            self.images.extend(a[k] for k in ("data-src", "src") if k in a)
        elif tag == "base" and "href" in a and self.base is None:
            self.base = a["href"]


def extract_links(html_text: str, page_url: str) -> tuple[list[str], list[str]]:
    """Absolute http(s) URLs of `<a href>` and `<img src>` in document order, fragments dropped."""
    parser = _LinkParser()
    parser.feed(html_text)
    parser.close()
    base = urllib.parse.urljoin(page_url, parser.base) if parser.base else page_url

    def absolute(refs: list[str]) -> list[str]:
        out = []
        for ref in refs:
            url = urllib.parse.urldefrag(urllib.parse.urljoin(base, ref.strip()))[0]
            if urllib.parse.urlsplit(url).scheme in ("http", "https"):
                out.append(url)
        return out

    return absolute(parser.anchors), absolute(parser.images)


def select_links(urls: list[str], pattern: str, order: Order, group: str) -> list[tuple[str, re.Match]]:
    """The URLs the pattern matches, each once, in document order or by the named numeric group."""
    rx = re.compile(pattern)
    seen: set[str] = set()
    picked = []
    for url in urls:
        m = rx.search(url)
        if m and url not in seen:
            seen.add(url)
            picked.append((url, m))
    if order == "number":
        def number(item: tuple[str, re.Match]) -> float:
            try:
                return float(item[1].group(group))
            except (TypeError, ValueError):
                return float("inf")
        picked.sort(key=number)  # stable: equal numbers keep document order
    return picked


# --- polite HTTP --------------------------------------------------------------------------------


@dataclass
class Response:
    """One answer, after redirects; `error` says why there is no usable answer (then status may be None)."""

    url: str
    status: int | None
    headers: dict[str, str]
    body: bytes = b""
    error: str | None = None
    retryable: bool = False
    attempts: int = 1


class _NoAutoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would follow redirects past our host and robots checks and the rate limit: hand the
    3xx back instead, and `Fetcher.get` follows it one checked hop at a time."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None

    def http_error_302(self, req, fp, code, msg, headers):
        return None  # before urllib parses the Location (a bad one raised ValueError out of the crawl)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _HostGate:
    """Spacing of request starts and the in-flight limit for one host.

    Waiters take turns, and the next start is measured from when a request really started, so
    two starts are never closer than `interval_s` even when a thread wakes late.
    """

    def __init__(self, interval_s: float, concurrency: int):
        self.interval_s = interval_s
        self._slots = threading.BoundedSemaphore(concurrency)
        self._turn = threading.Lock()
        self._lock = threading.Lock()
        self._next_start = 0.0

    @contextmanager
    def slot(self) -> Iterator[float]:
        with self._slots:
            with self._turn:
                while (wait := self._next_start - time.monotonic()) > 0:
                    time.sleep(wait)  # re-checked: hold_back may move the start while we sleep
                started = time.monotonic()
                with self._lock:
                    self._next_start = max(self._next_start, started + self.interval_s)
            yield started

    def hold_back(self, seconds: float) -> None:
        """No request to this host starts for `seconds` (the server asked us to wait)."""
        with self._lock:
            self._next_start = max(self._next_start, time.monotonic() + seconds)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or an HTTP date), or None for anything
    else: `²` passes `str.isdigit`, a date can be out of range, a number can have 10,000 digits."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", value):
        return float(value)
    if re.fullmatch(r"[0-9]+", value):
        return float("inf")  # longer than any wait we honour: treated as a refusal
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value) else None


class _Deadline:
    """The total time one answer may take: when it is up, the request's sockets are shut, so a read
    blocked on a server that sends one byte now and then returns at once (`expired` then says why)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket's shutdown, also under TLS: the reader sees the end of the stream
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Watched:
    """A connection whose socket its request's `_Deadline` can shut (mixed into http.client's two)."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _DeadlineHTTP(_Watched, http.client.HTTPConnection):
    pass


class _DeadlineHTTPS(_Watched, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(functools.partial(_DeadlineHTTP, deadline=req.deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        kwargs = {"context": self._context}
        if hasattr(self, "_check_hostname"):  # Python < 3.12
            kwargs["check_hostname"] = self._check_hostname
        return self.do_open(functools.partial(_DeadlineHTTPS, deadline=req.deadline), req, **kwargs)


def _is_timeout(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", None)
    return isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError) or "timed out" in str(exc)


class _TooLarge(Exception):
    pass


class Fetcher:
    """The only place requests are sent: robots.txt, host checks, rate and concurrency limits, retries.

    `request_log` holds (monotonic start time, URL) of every request actually sent. With a
    `cache` (a `CrawlIndex`), `fetch_text` makes conditional requests and keeps HTML on disk.
    """

    def __init__(self, cfg: SiteConfig, cache: CrawlIndex | None = None):
        self.cfg = cfg
        self.cache = cache
        self.request_log: list[tuple[float, str]] = []
        self._opener = urllib.request.build_opener(_NoAutoRedirect(), _DeadlineHTTPHandler(), _DeadlineHTTPSHandler())
        self._lock = threading.Lock()
        self._gates: dict[str, _HostGate] = {}
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}
        self._robots_locks: dict[str, threading.Lock] = {}

    def _gate(self, host: str) -> _HostGate:
        with self._lock:
            if host not in self._gates:
                self._gates[host] = _HostGate(1.0 / self.cfg.rate_limit_per_s, self.cfg.concurrency)
            return self._gates[host]

    # -- one request ---------------------------------------------------------------------------
    def _send_once(self, url: str, headers: dict[str, str], max_bytes: int) -> Response:
        host = urllib.parse.urlsplit(url).hostname or ""
        req = urllib.request.Request(url, headers={"User-Agent": self.cfg.user_agent, **headers})
        with self._gate(host).slot() as started:
            with self._lock:
                self.request_log.append((started, url))
            req.deadline = deadline = _Deadline(self.cfg.deadline())
            try:
                return self._answer(req, url, max_bytes, deadline)
            finally:
                deadline.cancel()

    def _answer(self, req: urllib.request.Request, url: str, max_bytes: int, deadline: _Deadline) -> Response:
        late = f"timeout: no whole answer within the {deadline.seconds:g} s deadline"
        try:
            raw = self._opener.open(req, timeout=self.cfg.timeout_s)
        except urllib.error.HTTPError as exc:
            raw = exc  # 3xx/4xx/5xx: still an answer we want to look at
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.expired:
                return Response(url, None, {}, error=late, retryable=True)
            if _is_timeout(exc):
                return Response(url, None, {}, error=f"timeout after {self.cfg.timeout_s:g} s", retryable=True)
            reason = getattr(exc, "reason", exc)
            return Response(url, None, {}, error=f"connection failed: {reason}", retryable=True)
        with raw:
            status = raw.code
            resp_headers = {k.lower(): v for k, v in raw.headers.items()}
            cap = max_bytes if 200 <= status < 300 else ERROR_BODY_BYTES
            try:
                body = self._read_capped(raw, resp_headers, cap)
            except _TooLarge as exc:
                if not 200 <= status < 300:
                    return Response(url, status, resp_headers)
                return Response(url, status, resp_headers, error=str(exc))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                error = (late if deadline.expired else f"timeout after {self.cfg.timeout_s:g} s" if _is_timeout(exc)
                         else f"read failed: {exc}")
                return Response(url, status, resp_headers, error=error, retryable=True)
        if deadline.expired:  # the shut socket looked like the end of a body without a length
            return Response(url, status, resp_headers, error=late, retryable=True)
        return Response(url, status, resp_headers, body)

    @staticmethod
    def _read_capped(raw, headers: dict[str, str], cap: int) -> bytes:
        declared = _content_length(headers)
        if declared is not None and declared > cap:
            raise _TooLarge(f"too large: Content-Length {declared:,} bytes > max_bytes {cap:,}")
        chunks, size = [], 0
        while chunk := raw.read(65536):
            size += len(chunk)
            if size > cap:
                raise _TooLarge(f"too large: more than max_bytes {cap:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _send(self, url: str, headers: dict[str, str]) -> Response:
        """One URL with retries: 429/5xx/timeouts back off exponentially; Retry-After holds back the host."""
        for attempt in range(self.cfg.retries + 1):
            resp = self._send_once(url, headers, self.cfg.max_bytes)
            resp.attempts = attempt + 1
            retry = resp.retryable if resp.error else resp.status in RETRY_STATUSES
            if not retry or attempt == self.cfg.retries:
                return resp
            wait = _retry_after(resp.headers.get("retry-after"))
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                resp.error = (f"HTTP {resp.status}: server asked to retry after {wait:.0f} s"
                              f" (over {MAX_RETRY_AFTER_S:.0f} s)")
                return resp
            if wait is not None:
                self._gate(urllib.parse.urlsplit(url).hostname or "").hold_back(wait)
            else:
                time.sleep(self.cfg.backoff * 2**attempt)
            log.info("retrying %s (attempt %d: %s)", url, attempt + 2, resp.error or f"HTTP {resp.status}")
        raise AssertionError("unreachable")

    # -- checks before every hop ----------------------------------------------------------------
    def refusal(self, url: str, redirected: bool = False, check_robots: bool = True) -> str | None:
        """Why `url` must not be requested, or None."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"refused non-HTTP URL {url!r}"
        host = (parts.hostname or "").lower()
        if host not in self.cfg.hosts():
            what = "redirect to" if redirected else "link to"
            return f"{what} host {host!r} refused: not base_url's host nor in allowed_hosts"
        if check_robots and not self.robots(url).can_fetch(ROBOTS_AGENT, url):
            return f"disallowed by robots.txt of {parts.scheme}://{parts.netloc}"
        return None

    def get(self, url: str, headers: dict[str, str] | None = None, check_robots: bool = True) -> Response:
        """GET with redirects followed by hand, every hop checked like the first."""
        headers = dict(headers or {})
        for hop in range(self.cfg.max_redirects + 1):
            problem = self.refusal(url, redirected=hop > 0, check_robots=check_robots)
            if problem:
                return Response(url, None, {}, error=problem)
            resp = self._send(url, headers)
            if resp.error or resp.status not in REDIRECT_STATUSES or "location" not in resp.headers:
                return resp
            try:
                url = urllib.parse.urldefrag(urllib.parse.urljoin(url, resp.headers["location"]))[0]
            except ValueError:
                return Response(url, resp.status, resp.headers, error=f"HTTP {resp.status}: unusable Location "
                                                                      f"{resp.headers['location'][:200]!r}")
        return Response(url, None, {}, error=f"more than {self.cfg.max_redirects} redirects")

    # -- robots.txt and HTML --------------------------------------------------------------------
    def robots(self, url: str) -> urllib.robotparser.RobotFileParser:
        """The robots.txt rules of `url`'s origin, fetched once per crawl."""
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:
            if origin in self._robots:
                return self._robots[origin]
            rp = urllib.robotparser.RobotFileParser(origin + "/robots.txt")
            resp, text = self.fetch_text(origin + "/robots.txt", check_robots=False)
            if text is not None:
                rp.parse(text.splitlines())
            elif resp.status is not None and 400 <= resp.status < 500 and resp.status not in (401, 403, 429):
                rp.allow_all = True  # no robots.txt: everything is allowed
            else:
                # RFC 9309 §2.3.1: forbidden or unreachable robots.txt means "crawl nothing".
                rp.disallow_all = True
                log.warning("robots.txt of %s unavailable (%s): not crawling that host", origin,
                            resp.error or f"HTTP {resp.status}")
            delay = rp.crawl_delay(ROBOTS_AGENT)
            rate = rp.request_rate(ROBOTS_AGENT)
            slowest = max(float(delay or 0), rate.seconds / rate.requests if rate else 0.0)
            gate = self._gate(parts.hostname or "")
            gate.interval_s = max(gate.interval_s, slowest)
            self._robots[origin] = rp
            return rp

    def fetch_text(self, url: str, check_robots: bool = True) -> tuple[Response, str | None]:
        """An HTML (or text) document, conditionally when cached; text is None when unusable."""
        cached = self.cache.listing(url) if self.cache else None
        headers = {"Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1"}
        if cached:
            headers.update(_conditional(cached[0]))
        resp = self.get(url, headers, check_robots=check_robots)
        if resp.error:
            return resp, None
        if resp.status == 304 and cached:
            return resp, cached[1]
        if resp.status != 200:
            return resp, None
        text = decode_text(resp.body, resp.headers.get("content-type", ""))
        if self.cache:
            self.cache.put_listing(url, resp)
        return resp, text


# Codecs Python has that are no charset of a web page: they refuse errors="replace", or are quadratic.
_NOT_A_CHARSET = {"idna", "punycode", "uu_codec", "undefined"}


def decode_text(body: bytes, content_type: str) -> str:
    """A document's text in its declared charset, UTF-8 when that names no text codec we can use
    (`charset=idna` has a codec, which raises on errors="replace"); bad bytes become U+FFFD."""
    m = re.search(r"charset=\"?([\w.:-]{1,40})", content_type, re.I)
    if m:
        try:
            info = codecs.lookup(m.group(1))
            if info._is_text_encoding and info.name not in _NOT_A_CHARSET:
                return body.decode(info.name, errors="replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass
    return body.decode("utf-8", errors="replace")


def _conditional(row: dict) -> dict[str, str]:
    headers = {}
    if row.get("etag"):
        headers["If-None-Match"] = row["etag"]
    if row.get("last_modified"):
        headers["If-Modified-Since"] = row["last_modified"]
    return headers


# --- the URL-keyed cache and crawl state --------------------------------------------------------


def local_name(url: str, ext: str) -> str:
    """File name for a downloaded URL: a hash of the URL and a known extension, nothing from the URL."""
    if ext not in {e for _, e in IMAGE_FORMATS.values()} | {"html"}:
        raise ValueError(f"local_name: extension {ext!r} is not one we write")
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:32] + "." + ext


_COLUMNS = ["url", "kind", "status", "http_status", "etag", "last_modified", "sha256", "path",
            "reason", "fetched_at", "run_id", "refresh_error"]


class CrawlIndex:
    """`out_dir/crawl.sqlite`: one row per URL (pages and HTML) and one open run per title.

    Each write commits on its own, so the state on disk is never more than one page behind.
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.out_dir)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.out_dir / "crawl.sqlite", timeout=60, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS entries (url TEXT PRIMARY KEY, kind TEXT, status TEXT,"
                " http_status INTEGER, etag TEXT, last_modified TEXT, sha256 TEXT, path TEXT, reason TEXT,"
                " fetched_at TEXT, run_id TEXT, refresh_error TEXT)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS runs (title TEXT PRIMARY KEY, run_id TEXT, started_at TEXT,"
                " finished_at TEXT)")
            have = {r[1] for r in self._db.execute("PRAGMA table_info(entries)")}
            if "refresh_error" not in have:  # crawl folders made before the column existed
                self._db.execute("ALTER TABLE entries ADD COLUMN refresh_error TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, url: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM entries WHERE url = ?", (url,)).fetchone()
        return dict(row) if row else None

    def put(self, url: str, **values) -> None:
        row = {c: values.get(c) for c in _COLUMNS}
        row["url"] = url
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO entries ({', '.join(_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(_COLUMNS))})", [row[c] for c in _COLUMNS])

    def begin_run(self, title: str) -> tuple[str, bool]:
        """The title's unfinished run (resumed) or a new one."""
        with self._lock:
            row = self._db.execute("SELECT run_id, finished_at FROM runs WHERE title = ?", (title,)).fetchone()
            if row and row["finished_at"] is None:
                return row["run_id"], True
            run_id = uuid.uuid4().hex
            self._db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, NULL)", (title, run_id, _now()))
            return run_id, False

    def finish_run(self, title: str, run_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET finished_at = ? WHERE title = ? AND run_id = ?", (_now(), title, run_id))

    # -- files ---------------------------------------------------------------------------------
    def write_file(self, folder: str, name: str, data: bytes) -> str:
        """Atomic write under out_dir; returns the path relative to out_dir."""
        self.store.write_bytes(self.store.path(folder, name), data)
        return f"{folder}/{name}"

    def read_file(self, rel: str | None) -> bytes | None:
        if not rel:
            return None
        try:
            return Path(self.store.path(*rel.split("/"))).read_bytes()
        except (OSError, ValueError):
            return None

    def intact(self, row: dict | None) -> bool:
        """The row's file is there with the bytes we recorded."""
        data = self.read_file(row.get("path")) if row else None
        return data is not None and sha256_bytes(data) == row["sha256"]

    def remove_file(self, rel: str | None) -> None:
        if rel:
            try:
                os.remove(self.store.path(*rel.split("/")))
            except (OSError, ValueError):
                pass

    # -- cached HTML -----------------------------------------------------------------------------
    def listing(self, url: str) -> tuple[dict, str] | None:
        row = self.get(url)
        if not row or row["kind"] != "listing" or not self.intact(row):
            return None
        return row, self.read_file(row["path"]).decode("utf-8")

    def put_listing(self, url: str, resp: Response) -> None:
        # Stored re-encoded as UTF-8 so a 304 later needs no charset.
        text = decode_text(resp.body, resp.headers.get("content-type", "")).encode("utf-8")
        path = self.write_file("listings", local_name(url, "html"), text)
        self.put(url, kind="listing", status="ok", http_status=resp.status, etag=resp.headers.get("etag"),
                 last_modified=resp.headers.get("last-modified"), sha256=sha256_bytes(text), path=path,
                 fetched_at=_now())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- the crawl ----------------------------------------------------------------------------------


@dataclass
class PageRecord:
    """One page of a title. `path` is relative to out_dir and None unless status is "ok".

    `page` counts from 1 in reading order; a record with page 0 stands for a chapter whose HTML
    could not be read (its pages are unknown), with the reason.
    """

    title: str
    chapter: str
    chapter_index: int
    page: int
    url: str
    http_status: int | None
    etag: str | None
    last_modified: str | None
    fetched_at: str
    sha256: str | None
    path: str | None
    status: Literal["ok", "quarantined"]
    reason: str | None
    refresh_error: str | None = None  # an ok page kept from an earlier crawl: why this crawl could not refresh it


@dataclass
class _Planned:
    title: str
    chapter: str
    chapter_index: int
    page: int
    url: str


def records_frame(records: list[PageRecord]) -> pd.DataFrame:
    """The records as a table (one row per page, columns in PageRecord order)."""
    columns = [f.name for f in fields(PageRecord)]
    frame = pd.DataFrame([asdict(r) for r in records], columns=columns)
    # Nullable ints: a page that got no HTTP answer must not turn every status into a float.
    return frame.astype({"chapter_index": "int64", "page": "int64", "http_status": "Int64"})


def _transient(resp: Response) -> bool:
    """A failure that says nothing about the page: timeouts, resets, 5xx, 429 (its retries spent)."""
    server_side = resp.status is not None and (resp.status == 429 or resp.status >= 500)
    return bool(resp.retryable or server_side) if resp.error else server_side


class CrawlBusy(CrawlError):
    """Another crawl holds the crawl folder."""


@contextmanager
def crawl_lock(out_dir: str | Path, title: str, wait_s: float = 0.0) -> Iterator[None]:
    """One crawl per crawl folder (one folder per site): fail at once, or wait up to `wait_s` seconds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "crawl.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    try:
                        holder = json.loads(path.read_text() or "{}")
                    except (OSError, ValueError):
                        holder = {}
                    who = (f"pid {holder.get('pid')}, title {holder.get('title')!r}, since {holder.get('since')}"
                           if holder else "another process")
                    raise CrawlBusy(f"another crawl is using {out} ({who}); wait for it to finish "
                                    f"(or pass a wait) instead of crawling the site twice at once") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "title": title, "since": _now()}).encode(), 0)
        yield
    finally:
        os.close(fd)


def check_image(resp: Response) -> tuple[str | None, str | None]:
    """(extension, None) for a usable page image, (None, reason) for anything else."""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    head = resp.body[:256].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<svg")):
        return None, f"HTML/XML served as {ctype or 'no Content-Type'}"
    allowed = {t for t, _ in IMAGE_FORMATS.values()}
    if ctype not in allowed and ctype not in GENERIC_TYPES:
        return None, f"Content-Type {ctype or '(none)'!r} is not one of {sorted(allowed)}"
    fmt = sniff_format(resp.body)
    if fmt not in IMAGE_FORMATS:
        return None, f"bytes are not PNG/JPEG/WebP/GIF (starts with {resp.body[:8]!r})"
    # Sites mislabel JPEG as PNG and back; both must be images, and the bytes decide the extension.
    try:
        read_image(resp.body)
    except ImageError as exc:
        return None, f"undecodable {fmt}: {exc.reason}"
    return IMAGE_FORMATS[fmt][1], None


class _Crawl:
    """One title's crawl: discover chapters and pages, then download what is not done yet."""

    def __init__(self, cfg: SiteConfig, title: str, index: CrawlIndex, fetcher: Fetcher):
        self.cfg, self.title, self.index, self.fetcher = cfg, title, index, fetcher

    def discover(self) -> tuple[list[_Planned], list[PageRecord]]:
        start = self.cfg.start_url(self.title)
        resp, text = self.fetcher.fetch_text(start)
        if text is None:
            why = resp.error or f"HTTP {resp.status}"
            raise CrawlError(f"title {self.title!r}: start page {start} unreadable ({why}); "
                             f"check titles[{self.title!r}] in the site description")
        anchors, _ = extract_links(text, resp.url)
        plan: list[_Planned] = []
        failures: list[PageRecord] = []
        chapters = select_links(anchors, self.cfg.chapter_link, self.cfg.chapter_order, "chapter")
        if not chapters:
            log.warning("title %r: no link on %s matches chapter_link %r", self.title, start, self.cfg.chapter_link)
        for c_index, (url, match) in enumerate(chapters, start=1):
            label = match.groupdict().get("chapter") or str(c_index)
            if (why := self.fetcher.refusal(url)) is not None:
                log.info("title %r: skipping chapter %s (%s)", self.title, url, why)
                continue
            images, problem = self._chapter_images(url)
            if problem:
                failures.append(PageRecord(self.title, label, c_index, 0, url, None, None, None, _now(),
                                           None, None, "quarantined", problem))
            plan.extend(_Planned(self.title, label, c_index, p, img) for p, img in enumerate(images, start=1))
        return plan, failures

    def _chapter_images(self, chapter_url: str) -> tuple[list[str], str | None]:
        queue, seen, images, problem = [chapter_url], {chapter_url}, [], None
        while queue:
            url = queue.pop(0)
            resp, text = self.fetcher.fetch_text(url)
            if text is None:
                problem = f"chapter page {url} unreadable ({resp.error or f'HTTP {resp.status}'}); pages may be missing"
                continue
            anchors, imgs = extract_links(text, resp.url)
            images.extend(imgs)
            if self.cfg.page_link:
                for a in anchors:
                    if a not in seen and len(seen) < MAX_PARTS_PER_CHAPTER and re.search(self.cfg.page_link, a):
                        seen.add(a)
                        queue.append(a)
        picked = select_links(images, self.cfg.page_image, self.cfg.page_order, "page")
        return [u for u, _ in picked], problem

    def fetch_page(self, item: _Planned, run_id: str) -> PageRecord:
        """Download (or revalidate) one page, check it, write it, commit its row."""
        row = self.index.get(item.url)
        usable = row is not None and row["kind"] == "page" and row["status"] == "ok" and self.index.intact(row)
        headers = {"Accept": "image/png,image/jpeg,image/webp,image/gif;q=0.9,*/*;q=0.1"}
        if usable:
            headers.update(_conditional(row))
        resp = self.fetcher.get(item.url, headers)
        base = dict(http_status=resp.status, fetched_at=_now())
        etag, modified = resp.headers.get("etag"), resp.headers.get("last-modified")
        if usable and _transient(resp):
            # The site is having a bad moment, not telling us the page is gone: keep the good copy.
            why = resp.error or f"HTTP {resp.status}" + (f" after {resp.attempts} attempts" if resp.attempts > 1 else "")
            log.warning("keeping the last good copy of %s: refresh failed (%s)", item.url, why)
            values = dict(base, status="ok", etag=row["etag"], last_modified=row["last_modified"], sha256=row["sha256"],
                          path=row["path"], fetched_at=row["fetched_at"], refresh_error=why)
        elif resp.error:
            values = dict(base, status="quarantined", reason=resp.error)
        elif resp.status == 304 and usable:
            values = dict(base, status="ok", etag=etag or row["etag"], last_modified=modified or row["last_modified"],
                          sha256=row["sha256"], path=row["path"])
        elif resp.status == 200:
            ext, reason = check_image(resp)
            if reason:
                values = dict(base, status="quarantined", reason=reason)
            else:
                path = self.index.write_file("pages", local_name(item.url, ext), resp.body)
                if usable and row["path"] != path:
                    self.index.remove_file(row["path"])
                values = dict(base, status="ok", etag=etag, last_modified=modified, sha256=sha256_bytes(resp.body),
                              path=path)
        else:
            tries = f" after {resp.attempts} attempts" if resp.attempts > 1 else ""
            values = dict(base, status="quarantined", reason=f"HTTP {resp.status}{tries}")
        if values["status"] != "ok" and row and row.get("path"):
            self.index.remove_file(row["path"])  # out_dir holds exactly what the index calls ok
        self.index.put(item.url, kind="page", run_id=run_id, **values)
        return self._record(item, values)

    def _record(self, item: _Planned, v: dict) -> PageRecord:
        return PageRecord(item.title, item.chapter, item.chapter_index, item.page, item.url, v.get("http_status"),
                          v.get("etag"), v.get("last_modified"), v["fetched_at"], v.get("sha256"), v.get("path"),
                          v["status"], v.get("reason"), v.get("refresh_error"))

    def finished_in_run(self, item: _Planned, run_id: str) -> PageRecord | None:
        """The page's record when this (resumed) run already finished it, else None."""
        row = self.index.get(item.url)
        if row is None or row["kind"] != "page" or row["run_id"] != run_id:
            return None
        if row["status"] == "ok" and not self.index.intact(row):
            return None
        return self._record(item, row)


ProgressFn = Callable[[PageRecord, int, int], None]


def crawl_title(
    cfg: SiteConfig,
    title: str,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    *,
    fetcher: Fetcher | None = None,
    wait_s: float = 0.0,
) -> list[PageRecord]:
    """Crawl one title into `out_dir`; returns its records in reading order.

    Holds `out_dir/crawl.lock` throughout: raises `CrawlBusy` when another crawl of the folder is
    running and has not finished within `wait_s` seconds.

    `progress(record, done, total)` is called after each page is committed; an exception raised
    there stops the crawl (pages already committed stay done, and the next call resumes).
    Pass a `Fetcher` to read its `request_log` afterwards.
    """
    with crawl_lock(out_dir, title, wait_s):
        return _crawl_locked(cfg, title, out_dir, progress, fetcher)


def _crawl_locked(cfg: SiteConfig, title: str, out_dir: str | Path, progress: ProgressFn | None,
                  fetcher: Fetcher | None) -> list[PageRecord]:
    index = CrawlIndex(out_dir)
    fetcher = fetcher or Fetcher(cfg)
    fetcher.cache = index
    try:
        run_id, resumed = index.begin_run(title)
        crawl = _Crawl(cfg, title, index, fetcher)
        plan, records = crawl.discover()
        total, done, todo = len(plan), 0, []
        if resumed:
            log.info("title %r: resuming an interrupted crawl", title)
        for item in plan:
            finished = crawl.finished_in_run(item, run_id) if resumed else None
            if finished is None:
                todo.append(item)
                continue
            records.append(finished)
            done += 1
            if progress:
                progress(finished, done, total)
        with ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="scraper") as pool:
            futures = [pool.submit(crawl.fetch_page, item, run_id) for item in todo]
            try:
                for future in as_completed(futures):
                    record = future.result()
                    records.append(record)
                    done += 1
                    if progress:
                        progress(record, done, total)
            except BaseException:
                for f in futures:
                    f.cancel()  # pages in flight still finish and commit; the rest wait for the resume
                raise
        index.finish_run(title, run_id)
    finally:
        fetcher.cache = None
        index.close()
    return sorted(records, key=lambda r: (r.chapter_index, r.page))


def scrape_cli(config_path: str | Path, title: str, out_dir: str | Path, progress: bool = True,
               *, base_url: str | None = None, wait_s: float = 0.0) -> int:
    """`mangacolor scrape`: crawl one title, write `manifests/<title>/manifest.parquet`; exit status.

    0: crawled, at least one page ok. 1: the crawl failed or found no usable page. 2: bad arguments.
    130: interrupted (run again to resume).
    """
    try:
        cfg = load_site_config(config_path)
        if base_url:
            cfg = cfg.with_base_url(base_url)
        cfg.start_url(title)
    except (FileNotFoundError, ValueError, KeyError, ValidationError) as exc:
        print(f"mangacolor scrape: {exc}", file=sys.stderr)
        return 2

    bar = tqdm(desc=title, unit="page", disable=not progress, file=sys.stderr)
    bad = 0

    def on_page(record: PageRecord, done: int, total: int) -> None:
        nonlocal bad
        bad += record.status != "ok"
        bar.total = total
        bar.update(1)
        bar.set_postfix(quarantined=bad, refresh=False)

    try:
        records = crawl_title(cfg, title, out_dir, on_page, wait_s=wait_s)
    except CrawlError as exc:
        print(f"mangacolor scrape: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nmangacolor scrape: interrupted; run the same command again to resume {title!r}", file=sys.stderr)
        return 130
    finally:
        bar.close()
    store = Store(out_dir)
    manifest = store.write_manifest(store.path("manifests", safe_part(title)), records_frame(records))
    ok = sum(r.status == "ok" for r in records)
    kept = sum(r.refresh_error is not None for r in records)
    if kept:
        print(f"mangacolor scrape: {kept} page(s) could not be refreshed; their last good copy is kept", file=sys.stderr)
    unchanged = sum(r.status == "ok" and r.http_status == 304 for r in records)
    print(f"{title}: {ok} pages ok ({unchanged} unchanged since the last crawl), {len(records) - ok} quarantined;"
          f" manifest {manifest}")
    if ok == 0:
        print(f"mangacolor scrape: no usable page for {title!r}; check chapter_link / page_image in {config_path}",
              file=sys.stderr)
        return 1
    return 0
