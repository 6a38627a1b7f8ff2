"""`mangacolor colorize` / `xdog` never touch a user's originals and never blow up (issue 22, items
1 to 3): every case is one line with its exit code, the originals' sha256 are unchanged, nothing is
written outside the output and nothing outside the inputs and the output is opened.

Most cases run `xdog` in-process (the same page loop as `colorize`, no model to load); the cases
that need the model use a random-init bundle. Disk-full and read-only cases run the real command in
a private mount namespace (`unshare -m`) over a tiny tmpfs, and are skipped where that is not allowed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mangacolor.cli import main
from mangacolor.io.images import encode_png, read_image

from .conftest import one_line, sha256_tree
from .test_archives_and_sources import peak_traced, understated_member

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MANGACOLOR_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _page(seed: int = 0, h: int = 48, w: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    page = np.full((h, w), 255, np.uint8)
    page[rng.integers(0, h, 120), rng.integers(0, w, 120)] = 0
    return encode_png(page)


def _cbz(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@pytest.fixture()
def tree(tmp_path):
    """A user's files: a page, a folder with a sub-folder and a chapter, and a chapter."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "orig.png").write_bytes(_page(0))
    (tmp_path / "in" / "001.png").write_bytes(_page(1))
    (tmp_path / "in" / "sub" / "002.png").write_bytes(_page(2))
    _cbz(tmp_path / "in" / "ch.cbz", [("ComicInfo.xml", b"<ComicInfo/>"), ("001.png", _page(3)), ("../evil.png", _page(4))])
    _cbz(tmp_path / "ch.cbz", [("001.png", _page(5)), ("002.png", _page(6))])
    return tmp_path


def run(tmp_path: Path, argv: list, capsys, out: Path | None = None, opened: list | None = None):
    """main(argv) in-process; asserts nothing outside `out` changed and, with `opened`, that nothing
    outside the inputs and `out` was opened under tmp_path. Returns (exit code, stdout, stderr)."""
    out = Path(out) if out is not None else None
    keep = lambda tree: {k: v for k, v in tree.items() if out is None or not (tmp_path / k).is_relative_to(out)}  # noqa: E731
    before = keep(sha256_tree(tmp_path))
    if opened is not None:
        opened.clear()
    code = main([str(a) for a in argv])
    seen = list(opened) if opened is not None else []
    stdout, stderr = capsys.readouterr()
    assert "Traceback" not in stderr
    assert keep(sha256_tree(tmp_path)) == before, "something outside the output changed"
    if opened is not None:
        inputs = [Path(a) for a in argv if isinstance(a, Path) and a != out]
        strays = [p for p in seen if p.startswith(str(tmp_path)) and not any(Path(p).is_relative_to(i) for i in inputs)
                  and not (out and Path(p).is_relative_to(out))]
        assert strays == [], f"opened outside the inputs and the output: {strays}"
    return code, stdout, stderr


# --- outputs that are inputs -------------------------------------------------------------------


@pytest.mark.parametrize("case", ["page onto itself", "chapter onto itself", "folder onto itself", "inside the input folder",
                                  "samples into the input folder", "a folder holding the input", "hard link to the input",
                                  "symlink in the output into the inputs"])
def test_an_output_that_is_an_input_is_refused_before_anything_is_written(tree, capsys, case):
    """Before: each of these replaced the originals (or wrote into the input folder, read back as
    input by the next run), --overwrite or not."""
    t = tree
    if case == "hard link to the input":
        os.link(t / "orig.png", t / "link.png")
    if case == "symlink in the output into the inputs":
        (t / "out").mkdir()
        (t / "out" / "sub").symlink_to(t / "in" / "sub")
    argv = {
        "page onto itself": ["xdog", t / "orig.png", "-o", t / "orig.png", "--overwrite"],
        "chapter onto itself": ["xdog", t / "ch.cbz", "-o", t / "ch.cbz", "--overwrite"],
        "folder onto itself": ["xdog", t / "in", "-o", t / "in", "--overwrite"],
        "inside the input folder": ["xdog", t / "in", "-o", t / "in" / "out"],
        "samples into the input folder": ["colorize", t / "in", "-o", t / "in", "--samples", "2", "--model", t / "none"],
        "a folder holding the input": ["xdog", t / "in", "-o", t],
        "hard link to the input": ["xdog", t / "orig.png", "-o", t / "link.png", "--overwrite"],
        "symlink in the output into the inputs": ["xdog", t / "in", "-o", t / "out", "--overwrite"],
    }[case]
    code, out, err = run(t, [*argv, "--quiet"], capsys)
    line = one_line(err)
    assert code == 2 and out == "" and line.startswith("error: -o ")
    assert any(w in line for w in ("is the input", "inside the input folder", "contains the input", "into the inputs"))


def test_a_rerun_never_reads_its_own_outputs_back(tree, capsys, opened):
    code, out, _ = run(tree, ["xdog", tree / "in", "-o", tree / "out", "--quiet"], capsys, tree / "out", opened)
    first = sha256_tree(tree / "out")
    code2, out2, _ = run(tree, ["xdog", tree / "in", "-o", tree / "out", "--quiet", "--overwrite"], capsys, tree / "out", opened)
    assert code == code2 == 0 and sha256_tree(tree / "out") == first  # same files, nothing one level deeper
    assert sorted(first) == ["001.png", "ch.cbz", "sub/002.png"]


# --- output errors -----------------------------------------------------------------------------


def test_an_existing_file_where_the_output_folder_goes_is_one_line(tree, capsys):
    (tree / "notes.txt").write_text("mine")
    code, _, err = run(tree, ["xdog", tree / "in", "-o", tree / "notes.txt", "--quiet"], capsys)
    assert code == 2 and "an existing regular file, where a folder to write into is needed" in one_line(err)
    code, _, err = run(tree, ["xdog", tree / "in", "-o", tree / "notes.txt" / "out", "--quiet"], capsys)
    assert code == 2 and "not a folder" in one_line(err)


def test_a_trailing_slash_makes_the_output_a_folder(tree, capsys):
    """Before: `-o x.png/` wrote a file named x.png (the slash was dropped); an existing folder
    x.png made the rename fail with IsADirectoryError."""
    code, _, _ = run(tree, ["xdog", tree / "orig.png", "-o", f"{tree / 'x.png'}/", "--quiet"], capsys, tree / "x.png")
    assert code == 0 and (tree / "x.png" / "orig.png").is_file()
    (tree / "y.png").mkdir()
    code, _, _ = run(tree, ["xdog", tree / "orig.png", "-o", tree / "y.png", "--quiet"], capsys, tree / "y.png")
    assert code == 0 and (tree / "y.png" / "orig.png").is_file()


def test_a_255_byte_page_name_is_written(tree, capsys):
    """Before: the temporary name `.NAME.tmp` was 5 bytes longer than the longest name allowed."""
    long = "p" * 251 + ".png"
    (tree / "long").mkdir()
    (tree / "long" / long).write_bytes(_page(7))
    code, out, err = run(tree, ["xdog", tree / "long", "-o", tree / "out", "--quiet"], capsys, tree / "out")
    assert code == 0, err
    assert read_image(tree / "out" / long).shape == (48, 40, 3)
    assert [p.name for p in (tree / "out").iterdir()] == [long]  # no temporary file left


def test_a_sample_name_too_long_for_the_file_system_fails_that_page_alone(tree, capsys, bundle):
    long = "q" * 251 + ".png"  # NAME_s1.png is 3 bytes too long
    (tree / "long").mkdir()
    (tree / "long" / long).write_bytes(_page(8))
    (tree / "long" / "short.png").write_bytes(_page(9))
    code, out, err = run(tree, ["colorize", tree / "long", "-o", tree / "out", "--samples", "2", "--quiet",
                                "--model", bundle], capsys, tree / "out")
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert code == 1 and len(skipped) == 1 and "more than the file system allows" in skipped[0]
    assert sorted(p.name for p in (tree / "out").iterdir()) == ["short_s1.png", "short_s2.png"]


def test_several_inputs_with_a_symlink_among_them(tree, capsys):
    """Before: the common folder was taken on resolved paths, and a link from elsewhere made
    `relative_to` raise ValueError."""
    (tree / "elsewhere").mkdir()
    (tree / "elsewhere" / "real.png").write_bytes(_page(10))
    (tree / "in" / "link.png").symlink_to(tree / "elsewhere" / "real.png")
    code, _, err = run(tree, ["xdog", tree / "orig.png", tree / "in" / "link.png", "-o", tree / "out", "--quiet"],
                       capsys, tree / "out")
    assert code == 0, err
    assert (tree / "out" / "in" / "link.png").is_file() and (tree / "out" / "orig.png").is_file()


def test_a_symlink_in_an_input_folder_leading_out_is_named_and_not_read(tree, capsys, opened):
    (tree / "secret").mkdir()
    (tree / "secret" / "key.png").write_bytes(_page(11))
    (tree / "in" / "003.png").symlink_to(tree / "secret" / "key.png")
    (tree / "in" / "more").symlink_to(tree / "secret")
    code, _, err = run(tree, ["xdog", tree / "in", "-o", tree / "out", "--quiet"], capsys, tree / "out", opened)
    assert code == 1
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2 and all("outside the input folder" in line for line in skipped)
    assert any("003.png" in line for line in skipped) and any("more" in line for line in skipped)
    assert not (tree / "out" / "003.png").exists() and (tree / "out" / "001.png").exists()


# --- what is not a file ------------------------------------------------------------------------


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_as_input_is_refused(tree, capsys, special):
    """Before: "0 page(s)", exit 0 (a FIFO or /dev/zero was taken for an empty folder)."""
    path = tree / "pipe.png" if special == "fifo" else Path(special)
    if special == "fifo":
        os.mkfifo(path)
    code, _, err = run(tree, ["xdog", path, "-o", tree / "out", "--quiet"], capsys)
    assert code == 2 and "not a regular file" in one_line(err)
    assert not (tree / "out").exists()


def test_a_fifo_inside_an_input_folder_is_skipped_unread(tree, capsys):
    os.mkfifo(tree / "in" / "000.png")
    os.mkfifo(tree / "in" / "zz.cbz")
    code, _, err = run(tree, ["xdog", tree / "in", "-o", tree / "out", "--quiet"], capsys, tree / "out")
    assert code == 1
    assert sum("not a regular file (FIFO)" in line for line in err.splitlines()) == 2
    assert (tree / "out" / "001.png").is_file()


def test_a_sparse_30_gib_page_is_refused_by_its_size(tree, capsys):
    """Before: read whole (MemoryError)."""
    with open(tree / "in" / "huge.png", "wb") as f:
        f.write(_page(12)[:64])
        f.truncate(30 * 2**30)
    (code, _, err), peak = peak_traced(lambda: run(tree, ["xdog", tree / "in", "-o", tree / "out", "--quiet"], capsys, tree / "out"))
    assert code == 1 and "over the" in err and "huge.png" in err
    assert peak < 64 * 2**20


# --- chapters ----------------------------------------------------------------------------------


def test_a_member_inflating_past_its_header_costs_a_piece(tree, capsys):
    """Before: `zf.read` inflated the whole member (3 GiB in the issue's probe) before the CRC check."""
    (tree / "bomb.cbz").write_bytes(understated_member(64 * 2**20))
    (code, _, err), peak = peak_traced(lambda: run(tree, ["xdog", tree / "bomb.cbz", "-o", tree / "out.cbz", "--quiet"],
                                                   capsys, tree / "out.cbz"))
    assert code == 1 and "002.png" in err
    assert peak < 24 * 2**20, f"{peak / 2**20:.0f} MiB"
    with zipfile.ZipFile(tree / "out.cbz") as zf:
        assert zf.namelist() == ["001.png", "003.png"]


@pytest.mark.parametrize("members", [[], [("ComicInfo.xml", b"<x/>")], [("../001.png", b"x")]])
def test_a_chapter_with_no_readable_page_is_one_line_and_no_output(tree, capsys, members):
    _cbz(tree / "empty.cbz", members)
    code, _, err = run(tree, ["xdog", tree / "empty.cbz", "-o", tree / "out.cbz", "--quiet"], capsys, tree / "out.cbz")
    assert code == 1 and "no readable page" in err
    assert not (tree / "out.cbz").exists()


# --- several writers, full disks, read-only places -----------------------------------------------


def _cli(*args, timeout=300, prefix=()):
    """The real command in a fresh process. xDoG with a named parameter set: no project preset, so no
    torch to import (the project presets load through the stage configs)."""
    args = [*map(str, args), *(["--preset", "authors2021"] if args[0] == "xdog" else [])]
    return subprocess.run([*prefix, sys.executable, "-m", "mangacolor.cli", *args], capture_output=True,
                          text=True, env=ENV, cwd=REPO, timeout=timeout)


def test_two_writers_of_one_output_both_finish(tree):
    """Before: both wrote `.NAME.tmp`; the second rename found it gone (FileNotFoundError)."""
    for i in range(30):
        (tree / "in" / f"p{i:03d}.png").write_bytes(_page(20 + i, 96, 80))
    cmd = [sys.executable, "-m", "mangacolor.cli", "xdog", str(tree / "in"), "-o", str(tree / "out"), "--overwrite", "--quiet",
           "--preset", "authors2021"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert all("Traceback" not in err for _, err in results)
    assert all(read_image(p).ndim == 3 for p in (tree / "out").glob("*.png"))
    assert not [p for p in (tree / "out").rglob(".tmp-*")]


def _mount_ns(tmp: Path, options: str) -> tuple[str, ...]:
    """A command prefix that runs in a private mount namespace with a tmpfs mounted at `tmp`."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is missing")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mounts here ({probe.stderr.decode().strip()[:80]})")
    return ("unshare", "-m", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "{tmp}" && exec "$0" "$@"')


def test_a_full_disk_is_one_line_and_exit_2(tree):
    """Before: ENOSPC came out of the page loop as a traceback."""
    (tree / "noise").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # noise: its line art does not compress either
        (tree / "noise" / f"big{i}.png").write_bytes(encode_png(rng.integers(0, 256, (300, 240), dtype=np.uint8)))
    (tree / "small").mkdir()
    r = _cli("xdog", tree / "noise", "-o", tree / "small" / "out", "--quiet", prefix=_mount_ns(tree / "small", "size=64k"))
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert line.startswith("error: cannot write") and "No space left on device" in line and "kept" in line


def test_a_read_only_output_is_refused_before_anything_runs(tree):
    (tree / "ro").mkdir()
    r = _cli("xdog", tree / "in", "-o", tree / "ro" / "out", "--quiet", prefix=_mount_ns(tree / "ro", "ro,size=64k"))
    assert r.returncode == 2 and "read-only file system" in one_line(r.stderr)


def test_an_output_folder_without_write_permission_is_refused_before_anything_runs():
    """As a user who may not write there (root may write anywhere: the command then runs as nobody)."""
    import tempfile

    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no user to be refused")
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    root = Path(tempfile.mkdtemp(prefix="mangacolor-perm-"))
    try:
        root.chmod(0o755)
        (root / "in").mkdir()
        (root / "in" / "001.png").write_bytes(_page(1))
        (root / "locked").mkdir(mode=0o555)
        (root / "locked").chmod(0o555)
        r = _cli("xdog", root / "in", "-o", root / "locked" / "out", "--quiet", prefix=prefix)
        assert r.returncode == 2, r.stderr
        assert "permission denied" in one_line(r.stderr)
        assert not (root / "locked" / "out").exists()
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)
