"""Benchmark: peak memory of three hostile files at full size (issue 22), each in its own process
under `/usr/bin/time -v` (its "Maximum resident set size").

- bomb: a chapter whose page `002.png` declares 1,000 bytes and inflates to 3 GiB of zeros, coloured
  as xDoG line art by the real command (`mangacolor xdog CH.cbz -o OUT.cbz`: the same page loop and
  member reader as `colorize`, no model to load), and read by `read_archive` (the ingest's reader);
- six: a chapter of six 240 MB members read by `read_archive`, one after another, each hashed;
- hint page: a 12000×12000 PNG (168 KB) sent to the hint page (`mangacolor serve`, random-init
  model) through Gradio's HTTP API, the peak of the serving process; next to it the same server sent
  a 64×48 page (the process's own baseline: torch, Gradio and the model), and the page's app in a
  process without torch (upload preprocessing and the Colorize handler, no model behind them).

The xDoG command imports torch too (its presets load through the project config): compare the bomb
with the same chapter without it. Before issue 22 these took 3 GB (bomb, CLI), 1.75 GB (six) and
6.2 GB (hint page). Target: each under 1 GB. The files are built once under --work (about 30 MB of
zips, the 168 KB PNG).

    uv run python benchmarks/hostile_memory.py              # ~2 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

MiB = 2**20


def bomb_cbz(path: Path, inflated: int = 3 * 2**30, declared: int = 1000) -> Path:
    """A CBZ: a good page, `002.png` declaring `declared` bytes but inflating to `inflated` zeros
    (compressed as a stream: the zeros are never in memory), a good page."""
    if path.exists():
        return path
    import numpy as np

    from mangacolor.io.images import encode_png

    page = encode_png(np.tile(np.arange(64, dtype=np.uint8), (48, 1)))
    comp, block, left, parts = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(16 * MiB), inflated, []
    while left:
        parts.append(comp.compress(block[: min(left, len(block))]))
        left -= min(left, len(block))
    parts.append(comp.flush())
    data = b"".join(parts)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("001.png", page)
        info = zipfile.ZipInfo("002.png")
        info.compress_type, info.file_size, info.compress_size, info.CRC = zipfile.ZIP_DEFLATED, declared, len(data), 0
        info.header_offset = zf.fp.tell()
        zf.fp.write(info.FileHeader())
        zf.fp.write(data)
        zf.filelist.append(info)
        zf.NameToInfo[info.filename] = info
        zf.start_dir = zf.fp.tell()
        zf.writestr("003.png", page)
    return path


def six_cbz(path: Path, members: int = 6, size: int = 240 * 10**6) -> Path:
    """A CBZ of `members` members of `size` bytes: 1 KiB of noise then 63 KiB of zeros, repeated (about
    50:1 deflated, under the bomb ratio), so the zip is ~30 MB while each member inflates to `size`."""
    if path.exists():
        return path
    block = os.urandom(1024) + bytes(63 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(members):
            info = zipfile.ZipInfo(f"{i + 1:03d}.png")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                left = size
                while left:
                    f.write(block[: min(left, len(block))])
                    left -= min(left, len(block))
    return path


def big_png(path: Path, side: int = 12000) -> Path:
    if not path.exists():
        from PIL import Image

        Image.new("L", (side, side), 255).save(path, optimize=True)
    return path


# --- what each measured process runs -----------------------------------------------------------


def hint_handler_case(image: Path) -> dict:
    """The hint page's app (Gradio's upload preprocessing, then the Colorize handler) in a process
    without torch: a page with no model behind it, which the refused image never reaches."""
    import socket

    from gradio_client import Client, handle_file

    from mangacolor.serve import build_app, close_app

    class NoModel:  # stands in for the Colorizer: the refused image must never reach it
        takes_reference = False

        def colorize(self, *args, **kwargs):
            raise RuntimeError("no model in this process: the image was not refused")

    app = build_app(NoModel())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        Client(url, verbose=False).predict({"background": handle_file(str(image)), "layers": [], "composite": None},
                                           None, 1, 0, api_name="/run")
        return {"shown": "accepted"}
    except Exception as exc:  # noqa: BLE001 - what the page showed
        return {"shown": f"{type(exc).__name__}: {exc}"}
    finally:
        close_app(app)


def read_archive_case(source: Path) -> dict:
    from mangacolor.data.archives import read_archive

    seen = []
    for m in read_archive(source):
        seen.append((m.name, len(m.data) if m.data is not None else None, m.reason and m.reason[:80]))
    return {"members": seen}


def _time_v(stderr: str, what: str) -> float:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if m is None:
        raise RuntimeError(f"{what}: no peak RSS from /usr/bin/time:\n{stderr[-2000:]}")
    return int(m.group(1)) / 1000


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MANGACOLOR_THREADS": "1"}
REPO = Path(__file__).resolve().parents[1]


def measure_cli(args: list[str]) -> tuple[float, str]:
    """Peak RSS (MB) of `mangacolor ARGS` in a fresh process, and its last line of output."""
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "mangacolor.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env=ENV)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and not line.startswith("\t")]
    return _time_v(done.stderr, " ".join(args)), f"exit {done.returncode}: " + " | ".join(lines[:2])[:200]


def measure_child(case: str, work: Path) -> tuple[float, str]:
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, __file__, "--child", case, "--work", str(work)],
                          capture_output=True, text=True, cwd=REPO, env=ENV)
    return _time_v(done.stderr, case), done.stdout.strip()[-300:]


def measure_hint_page(bundle: Path, image: Path) -> tuple[float, str]:
    """Peak RSS (MB) of a `mangacolor serve` process that is sent `image` through Gradio's HTTP API
    (from this process), and what the page showed."""
    import signal
    import socket

    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["/usr/bin/time", "-v", sys.executable, "-m", "mangacolor.cli", "serve", "--model", str(bundle),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    try:
        line = proc.stdout.readline()  # "mangacolor hint page on URL ..."
        url = re.search(r"(http://\S+)", line).group(1)
        editor = {"background": handle_file(str(image)), "layers": [], "composite": None}
        try:
            out = Client(url, verbose=False).predict(editor, None, 1, 0, api_name="/run")
            shown = f"accepted: {out[2]}"
        except Exception as exc:  # noqa: BLE001 - what the page showed
            shown = f"{type(exc).__name__}: {exc}"
    finally:
        # /usr/bin/time passes no signal on: Ctrl-C the server it started (its one child), by pid.
        for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            os.kill(int(child), signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    return _time_v(err, "serve"), shown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated files (default: a temp folder)")
    ap.add_argument("--only", default="bomb,six,hint", help="which cases: bomb, six, hint (comma-separated)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case = hint_handler_case if args.child.endswith(".png") else read_archive_case
        print(json.dumps(case(args.work / args.child), default=str))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="hostile-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    bomb_cbz(work / "bomb.cbz")
    six_cbz(work / "six.cbz")
    big_png(work / "big.png")
    import numpy as np

    from mangacolor.io.images import encode_png

    small = work / "small.png"
    small.write_bytes(encode_png(np.full((64, 48), 200, np.uint8)))
    with zipfile.ZipFile(work / "plain.cbz", "w") as zf, zipfile.ZipFile(work / "bomb.cbz") as bomb:
        for name in ("001.png", "003.png"):
            zf.writestr(name, bomb.read(name))
    sys.path.insert(0, str(REPO))
    from tests.eval.bundles import tiny_bundle

    bundle = tiny_bundle(work / "bundle")
    print(f"files in {work}: bomb.cbz {os.path.getsize(work / 'bomb.cbz') / MiB:.1f} MiB (002.png declares 1,000 bytes, "
          f"inflates to 3 GiB), six.cbz {os.path.getsize(work / 'six.cbz') / MiB:.1f} MiB (6 × 240 MB), "
          f"big.png {os.path.getsize(work / 'big.png') / 1e3:.0f} KB (12000×12000)")
    cases = {
        "bomb": [("3 GiB member, CLI (xdog)", lambda: measure_cli(["xdog", str(work / "bomb.cbz"), "-o", str(work / "out.cbz"),
                                                                     "--overwrite", "--quiet"])),
                 ("  same chapter without it", lambda: measure_cli(["xdog", str(work / "plain.cbz"), "-o", str(work / "out2.cbz"),
                                                                      "--overwrite", "--quiet"])),
                 ("3 GiB member, read_archive", lambda: measure_child("bomb.cbz", work))],
        "six": [("6 x 240 MB, read_archive", lambda: measure_child("six.cbz", work))],
        "hint": [("12000² PNG, hint page", lambda: measure_hint_page(bundle, work / "big.png")),
                 ("  a 64×48 page instead", lambda: measure_hint_page(bundle, small)),
                 ("12000² PNG, page w/o torch", lambda: measure_child("big.png", work))],
    }
    for what, run in [row for name in args.only.split(",") for row in cases[name.strip()]]:
        peak, said = run()
        print(f"{what:28s} peak RSS {peak:6.0f} MB  {'under 1 GB' if peak < 1000 else 'OVER 1 GB'}  {said[:160]}")


if __name__ == "__main__":
    main()
