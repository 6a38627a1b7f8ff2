"""`mangacolor colorize` as a user meets it: where files go, archives, colour pages, re-runs, samples,
a reference and a locked palette, bad input (exit codes, one-line errors), Ctrl-C and progress."""

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mangacolor.cli import main
from mangacolor.drafting.sampling import PaletteLock
from mangacolor.inference.bundle import ModelBundle
from mangacolor.io.images import encode_jpeg, encode_png, read_image

ENV = {**os.environ, "MANGACOLOR_THREADS": "1", "OMP_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parents[2]


def _page(h=80, w=56, seed=0):
    rng = np.random.default_rng(seed)
    page = np.full((h, w), 255, np.uint8)
    page[rng.integers(0, h, 200), rng.integers(0, w, 200)] = 0
    return page


def _colour_page(h=80, w=56):
    page = np.zeros((h, w, 3), np.uint8)
    page[: h // 2] = (220, 60, 60)
    page[h // 2 :] = (40, 160, 220)
    return page


def _cbz(path: Path, members: list[tuple[str, bytes]]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _cli(*args, timeout=600):
    """The real command in a fresh process: what a user's shell sees."""
    return subprocess.run([sys.executable, "-m", "mangacolor.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=timeout)


def test_one_page_and_an_image_name_writes_that_file(bundle, tmp_path):
    (tmp_path / "p.png").write_bytes(encode_png(_page(61, 97)))
    assert main(["colorize", str(tmp_path / "p.png"), "-o", str(tmp_path / "res" / "page_color.png"), "--model", str(bundle), "--quiet"]) == 0
    out = tmp_path / "res" / "page_color.png"
    assert out.is_file() and read_image(out).shape == (61, 97, 3)
    assert list((tmp_path / "res").iterdir()) == [out]


def test_folders_mirror_paths_archives_stay_archives(bundle, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "ch1").mkdir(parents=True)
    (src / "ch2").mkdir()
    (src / "ch1" / "001.png").write_bytes(encode_png(_page(seed=1)))
    (src / "ch2" / "001.png").write_bytes(encode_png(_page(seed=2)))
    (src / "ch2" / "002.jpg").write_bytes(encode_jpeg(_page(seed=3)))
    (src / "ch2" / "broken.png").write_bytes(b"not a png")
    (src / "notes.txt").write_text("not a page: ignored")
    colour = encode_png(_colour_page())
    (src / "cover.png").write_bytes(colour)
    info = b"<ComicInfo><Title>t</Title></ComicInfo>"
    # Stored order (not sorted order) is what a reader shows: it must survive.
    _cbz(src / "vol" / "ch3.cbz", [("ComicInfo.xml", info), ("p10.png", encode_png(_page(seed=4))),
                                    ("p2.png", encode_png(_page(seed=5))), ("cover.png", colour)])
    out = tmp_path / "out"
    rc = main(["colorize", str(src), "-o", str(out), "--model", str(bundle), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1  # a page failed: reported, the rest written
    assert "broken.png" in err and "not an image" in err
    a, b = read_image(out / "ch1" / "001.png"), read_image(out / "ch2" / "001.png")
    assert a.shape == b.shape == (80, 56, 3) and not np.array_equal(a, b)  # two pages, no overwrite
    assert (out / "ch2" / "002.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # name and format kept
    assert not (out / "ch2" / "broken.png").exists() and not (out / "notes.txt").exists()
    assert (out / "cover.png").read_bytes() == colour  # already in colour: copied through
    with zipfile.ZipFile(out / "vol" / "ch3.cbz") as zf:
        assert zf.namelist() == ["ComicInfo.xml", "p10.png", "p2.png", "cover.png"]
        assert zf.read("ComicInfo.xml") == info and zf.read("cover.png") == colour
        assert read_image(zf.read("p10.png")).shape == (80, 56, 3)
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no parts folders or temp files left

    # --force colours colour pages too
    assert main(["colorize", str(src / "cover.png"), "-o", str(tmp_path / "forced"), "--force", "--model", str(bundle), "--quiet"]) == 0
    assert (tmp_path / "forced" / "cover.png").read_bytes() != colour


def test_two_archives_with_one_name_do_not_merge(bundle, tmp_path):
    one = _cbz(tmp_path / "a" / "ch.cbz", [("1.png", encode_png(_page(seed=1)))])
    two = _cbz(tmp_path / "b" / "ch.cbz", [("1.png", encode_png(_page(seed=2))), ("2.png", encode_png(_page(seed=3)))])
    assert main(["colorize", str(one), str(two), "-o", str(tmp_path / "out"), "--model", str(bundle), "--quiet"]) == 0
    for name, n in (("a", 1), ("b", 2)):
        with zipfile.ZipFile(tmp_path / "out" / name / "ch.cbz") as zf:
            assert len(zf.namelist()) == n


def test_rerun_skips_finished_pages_and_overwrite_redoes_them(bundle, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for i in range(2):
        (tmp_path / "in" / f"{i}.png").write_bytes(encode_png(_page(seed=i)))
    args = ["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(bundle), "--quiet"]
    assert main(args) == 0
    marker = encode_png(np.zeros((8, 8), np.uint8))
    (tmp_path / "out" / "0.png").write_bytes(marker)
    capsys.readouterr()
    assert main(args) == 0
    assert "2 already done" in capsys.readouterr().out
    assert (tmp_path / "out" / "0.png").read_bytes() == marker  # not redone
    assert main([*args, "--overwrite"]) == 0
    assert read_image(tmp_path / "out" / "0.png").shape == (80, 56, 3)


def test_samples_differ_and_palette_lock_is_shared(bundle, tmp_path):
    page = tmp_path / "p.png"
    page.write_bytes(encode_png(_page()))
    assert main(["colorize", str(page), "-o", str(tmp_path / "s"), "--model", str(bundle), "--samples", "3",
                 "--draft-seed", "7", "--quiet"]) == 0
    outs = [read_image(tmp_path / "s" / f"p_s{k}.png").astype(int) for k in (1, 2, 3)]
    assert np.abs(outs[0] - outs[1]).mean() > 0.05 and np.abs(outs[1] - outs[2]).mean() > 0.05
    b = ModelBundle.load(bundle)
    d1 = b.drafts(_page(seed=1), seed=None)[0]
    lock = PaletteLock.from_seed(b.drafting, 3)
    locked = [b.drafts(_page(seed=s), lock=lock)[0] for s in (1, 2)]
    assert not torch.allclose(d1, locked[0])  # the lock changes the draft's colours
    assert main(["colorize", str(page), "-o", str(tmp_path / "l"), "--model", str(bundle), "--lock-palette", "3", "--quiet"]) == 0
    assert (tmp_path / "l" / "p.png").is_file()


def test_reference_image_changes_the_colours(bundle, tmp_path):
    page = tmp_path / "p.png"
    page.write_bytes(encode_png(_page()))
    ref = tmp_path / "ref.png"
    ref.write_bytes(encode_png(np.full((40, 40, 3), (200, 30, 30), np.uint8)))
    assert main(["colorize", str(page), "-o", str(tmp_path / "r.png"), "--model", str(bundle), "--reference", str(ref), "--quiet"]) == 0
    assert main(["colorize", str(page), "-o", str(tmp_path / "plain.png"), "--model", str(bundle), "--quiet"]) == 0
    assert not np.array_equal(read_image(tmp_path / "r.png"), read_image(tmp_path / "plain.png"))


def test_unusable_inputs_are_reported_before_torch_or_the_model_loads(tmp_path):
    """"No such file" comes in a second, not after the 8 s torch import and the model download."""
    (tmp_path / "p.png").write_bytes(encode_png(_page()))
    (tmp_path / "ref.png").write_text("<html>not an image</html>")
    calls = [["colorize", str(tmp_path / "nope.png"), "-o", str(tmp_path / "out")],
             ["colorize", str(tmp_path / "p.png"), "-o", str(tmp_path / "out"), "--reference", str(tmp_path / "ref.png")],
             ["colorize", str(tmp_path / "p.png"), "-o", str(tmp_path / "out"), "--hints", str(tmp_path / "ref.png")]]
    code = f"import sys; from mangacolor.cli import main; print([main(a) for a in {calls!r}], 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert done.stdout.split() == ["[2,", "2,", "2]", "False"], done.stdout + done.stderr[-2000:]
    assert [line.split(":")[0] for line in done.stderr.splitlines() if line.startswith("error:")] == ["error"] * 3, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing input", "not a page", "bad reference", "hint of another shape",
                                  "missing model", "image name for a folder"])
def test_unusable_input_is_one_line_exit_2_no_traceback(bundle, tmp_path, case, capsys):
    page = tmp_path / "p.png"
    page.write_bytes(encode_png(_page()))
    args = [page, "-o", tmp_path / "out", "--model", bundle]
    named = {
        "missing input": (["colorize", tmp_path / "nope.png", *args[1:]], "nope.png", "no such file"),
        "not a page": (["colorize", tmp_path / "x.txt", *args[1:]], "x.txt", "expected a page image"),
        "bad reference": (["colorize", *args, "--reference", tmp_path / "ref.png"], "ref.png", "not a usable reference image"),
        "hint of another shape": (["colorize", *args, "--hints", tmp_path / "h.png"], "h.png", "but the page is 56×80"),
        "missing model": (["colorize", page, "-o", tmp_path / "out", "--model", tmp_path / "m"], "m", "not a mangacolor model bundle"),
        "image name for a folder": (["colorize", tmp_path, "-o", tmp_path / "x.png", "--model", bundle], "x.png", "give a folder"),
    }
    (tmp_path / "x.txt").write_text("hello")
    (tmp_path / "ref.png").write_text("<html>not an image</html>")
    (tmp_path / "h.png").write_bytes(encode_png(np.zeros((10, 90, 4), np.uint8)))
    argv, name, expected = named[case]
    if case in ("missing input", "bad reference", "hint of another shape"):
        r = _cli(*argv)  # in a real process: what the shell sees
        rc, err = r.returncode, r.stderr
    else:  # in-process (a traceback would be an exception here): keeps the suite fast
        rc, err = main([str(a) for a in argv]), capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and name in lines[0] and expected in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_keeps_finished_pages_and_a_rerun_goes_on(bundle, tmp_path):
    # The interrupt is sent once two pages are kept; the CLI stops after the page in hand (about 0.1 s).
    pages = [(f"{i:03d}.png", encode_png(_page(256, 192, seed=i))) for i in range(40)]
    _cbz(tmp_path / "ch.cbz", [("ComicInfo.xml", b"<ComicInfo/>"), *pages])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mangacolor.cli", "colorize", str(tmp_path / "ch.cbz"), "-o", str(out), "--model", str(bundle)]
    # As at a terminal: SIGINT at its default. A test run started in the background of a script (as CI
    # harnesses do) has it ignored, the child inherits that, and Ctrl-C would rightly do nothing.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
                            preexec_fn=_sigint_default)
    parts = out / ".ch.cbz.parts"
    deadline = time.monotonic() + 600  # generous: on a loaded machine importing torch alone can take a minute
    while time.monotonic() < deadline and len(list(parts.glob("*.png"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "run the same command again" in err
    assert "page/s" in err and "ETA" in err  # the progress line
    kept = sorted(parts.glob("*"))
    assert 2 <= len(kept) < len(pages) and all(read_image(p).shape == (256, 192, 3) for p in kept)  # whole files only
    assert not (out / "ch.cbz").exists()

    r = subprocess.run(cmd + ["--quiet"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"{len(kept)} already done" in r.stdout
    with zipfile.ZipFile(out / "ch.cbz") as zf:
        assert zf.namelist() == ["ComicInfo.xml", *(n for n, _ in pages)]
    assert not parts.exists()


def test_ctrl_c_is_not_lost_in_a_catch_all(tmp_path):
    """An interrupt whose KeyboardInterrupt lands in code that swallows everything (a finalizer, a
    library's bare except) still ends the run after the page in hand, with exit 130 and that page kept."""
    from mangacolor.inference.batch import BatchOptions, run_units
    from mangacolor.inference.pages import plan_outputs

    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.png").write_bytes(encode_png(_page(seed=i)))
    seen = []

    def process(page, rel):
        seen.append(rel)
        if len(seen) == 2:
            signal.raise_signal(signal.SIGINT)
            try:  # Python runs the handler at the next instruction, here ...
                sum(range(1000))
            except BaseException:  # ... and a catch-all eats whatever it raised
                pass
        return [page]

    opts = BatchOptions(out=tmp_path / "out", quiet=True)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, even in a background test run
    try:
        rc = run_units(plan_outputs([src], opts.out), process, opts, what="copied")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the CLI's handler is gone again
    finally:
        signal.signal(signal.SIGINT, previous)
    assert rc == 130 and len(seen) == 2
    assert sorted(p.name for p in opts.out.rglob("*.png")) == ["0.png", "1.png"]
