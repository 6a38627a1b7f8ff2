"""The commit protocol of the store under failure and concurrency (issue 11, points 1 and 2).

Real files, real subprocesses, the real `mangacolor store verify` command.
"""

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mangacolor.cli import main as cli_main
from mangacolor.io.store import STAGING_PREFIX, Store, commit_scope, content_version

ROUNDS = 20


def _staging(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob(f"{STAGING_PREFIX}*"))


# --- point 1: the version covers every column and every file -----------------------------------


def test_version_changes_when_only_the_split_assignment_changes(tmp_path):
    """page_splits keeps id, sha256, status, reason; only `split` moves a page into the holdout."""
    store = Store(tmp_path)
    pages = [{"id": f"t/{i:03d}", "title": "t", "page": f"{i:03d}", "sha256": f"{i:064x}", "status": "ok"} for i in range(4)]

    def commit(holdout: set[str]) -> str:
        writer = store.begin("page_splits")
        for row in pages:
            writer.add({**row, "split": "holdout" if row["id"] in holdout else "train"})
        return writer.commit(salt="0:0.25:None")[0]

    v1 = commit({"t/000"})
    v2 = commit({"t/001"})
    assert v1 != v2
    assert store.latest_version("page_splits") == v2
    frame = store.latest_manifest("page_splits").set_index("id")
    assert frame.loc["t/001", "split"] == "holdout" and frame.loc["t/000", "split"] == "train"
    assert commit({"t/000"}) == v1  # the same assignment is the same version again


def test_version_is_canonical_over_column_order_types_and_nulls_and_covers_files():
    a = {"id": "x", "score": 1.5, "n": 3, "reason": None}
    b = {"reason": float("nan"), "n": __import__("numpy").int64(3), "score": 1.5, "id": "x"}
    assert content_version([a]) == content_version([b])
    assert content_version([a]) != content_version([{**a, "score": 1.25}])
    assert content_version([a], files={"r.json": "1"}) != content_version([a], files={"r.json": "2"})
    assert content_version([{**a, "fetched_at": "now"}], exclude=["fetched_at"]) == content_version([a])


# --- point 2: stage, seal, commit last; failures leave LATEST and no staging --------------------


def _write(store: Store, asset: str, content: str, n: int = 3):
    writer = store.begin(asset)
    for i in range(n):
        path = writer.write(f"pages/{i:03d}.txt", f"{content}-{i}".encode())
        writer.add({"id": f"{i:03d}", "path": path, "status": "ok"})
    return writer


def test_failure_removes_staging_and_leaves_latest(tmp_path):
    store = Store(tmp_path)
    v1 = _write(store, "a", "one").commit()[0]
    with pytest.raises(RuntimeError, match="boom"), store.begin("a") as writer:
        writer.write("pages/x.txt", b"half")
        raise RuntimeError("boom")
    assert _staging(tmp_path) == []
    assert store.latest_version("a") == v1


def test_failure_after_writing_before_commit_leaves_latest_unchanged(tmp_path, monkeypatch):
    """What an asset does: write, seal, then metadata and MLflow; the MLflow step fails (its server is down)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    store = Store(tmp_path / "artifacts")
    v1 = _write(store, "refined_pages", "old").commit()[0]
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # the discard port: nothing answers
    try:
        with pytest.raises(Exception) as failure, commit_scope():
            writer = _write(store, "refined_pages", "new")
            version, vdir, _ = writer.seal()
            assert version != v1 and os.path.exists(os.path.join(vdir, "pages", "000.txt"))
            with mlflow.start_run():
                pass
    finally:
        mlflow.set_tracking_uri(None)
    assert "127.0.0.1" in str(failure.value) or "Connection" in type(failure.value).__name__
    assert store.latest_version("refined_pages") == v1
    assert _staging(tmp_path) == []
    assert cli_main(["store", "verify", "--root", str(tmp_path / "artifacts")]) == 0


def test_stale_staging_is_swept_and_fresh_staging_kept(tmp_path):
    store = Store(tmp_path)
    base = tmp_path / "a" / "all"
    old = base / f"{STAGING_PREFIX}{int((time.time() - 3 * 86400) * 1e3)}-deadbeef0001"
    fresh = base / f"{STAGING_PREFIX}{int(time.time() * 1e3)}-deadbeef0002"
    for folder in (old, fresh):
        (folder / "pages").mkdir(parents=True)
        (folder / "pages" / "x.png").write_bytes(b"x")
    _write(store, "a", "one").commit()
    assert not old.exists()
    assert fresh.exists()  # another writer may still be busy with it
    assert store.sweep_staging("a", max_age_s=0) == [fresh.name]


def test_verify_reports_missing_and_changed_files(tmp_path, capsys):
    store = Store(tmp_path)
    _, vdir, _ = _write(store, "a", "one").commit()
    assert cli_main(["store", "verify", "--root", str(tmp_path)]) == 0
    Path(vdir, "pages", "000.txt").write_bytes(b"tampered")
    Path(vdir, "pages", "001.txt").unlink()
    assert cli_main(["store", "verify", "--root", str(tmp_path), "--asset", "a"]) == 1
    out = capsys.readouterr().out
    assert "pages/000.txt: sha256" in out and "pages/001.txt: missing" in out
    assert cli_main(["store", "verify", "--root", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "missing").exists()  # verifying never creates a store


def test_memory_store_seal_commit_and_verify():
    store = Store("memory://mangacolor-commit-protocol")
    v, _, _ = _write(store, "a", "m").commit()
    assert store.latest_version("a") == v
    from mangacolor.io.store import verify

    assert verify(store) == (1, [])


# --- two processes writing one partition at once --------------------------------------------------


def _writer_process(root: str, who: str, start, done, results) -> None:
    store = Store(root)
    for round_ in range(ROUNDS):
        start.wait()
        # Even rounds: both write the same content (the same version); odd rounds: different content.
        content = f"r{round_}" if round_ % 2 == 0 else f"r{round_}-{who}"
        writer = _write(store, "page_splits", content, n=12)
        version, _, _ = writer.commit()
        results.put((round_, who, version))
        done.wait()


def test_two_processes_commit_one_partition_twenty_rounds_and_verify_clean(tmp_path):
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(3), ctx.Barrier(3)
    results = ctx.Queue()
    root = str(tmp_path / "artifacts")
    procs = [ctx.Process(target=_writer_process, args=(root, who, start, done, results)) for who in ("a", "b")]
    for p in procs:
        p.start()
    store = Store(root)
    try:
        for round_ in range(ROUNDS):
            start.wait(timeout=120)
            got = dict((who, v) for _, who, v in (results.get(timeout=120) for _ in procs))
            assert cli_main(["store", "verify", "--root", root]) == 0, f"round {round_}"
            assert store.latest_version("page_splits") in set(got.values())
            for v in got.values():
                assert len(store.read_manifest(store.path("page_splits", "all", v))) == 12
            if round_ % 2 == 0:
                assert got["a"] == got["b"]
            done.wait(timeout=120)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert _staging(tmp_path) == []
    # The console command itself, once, as a user runs it.
    proc = subprocess.run([sys.executable, "-m", "mangacolor.cli", "store", "verify", "--root", root],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{ROUNDS + ROUNDS // 2} manifests checked" in proc.stdout


def test_verify_exit_code_from_the_command_line_when_a_file_is_gone(tmp_path):
    store = Store(tmp_path)
    _, vdir, _ = _write(store, "a", "one").commit()
    Path(vdir, "pages", "002.txt").unlink()
    proc = subprocess.run([sys.executable, "-m", "mangacolor.cli", "store", "verify", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "a/all/" in proc.stdout and "pages/002.txt: missing" in proc.stdout
