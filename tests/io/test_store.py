import os

import numpy as np
import pytest

from mangacolor.io.images import encode_png
from mangacolor.io.store import LATEST, MANIFEST, Store, content_version, safe_part


def _commit(store: Store, asset="color_pages", partition="t1", pages=2, seed=0):
    w = store.begin(asset, partition)
    rng = np.random.default_rng(seed)
    for i in range(pages):
        data = encode_png(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        path = w.write(f"pages/{i:03d}.png", data)
        w.add({"id": f"{partition}/{i:03d}", "title": partition, "page": f"{i:03d}", "sha256": str(hash(data)), "status": "ok", "path": path})
    return w.commit()


def test_layout_and_manifest_last(tmp_path):
    store = Store(tmp_path)
    version, vdir, frame = _commit(store)
    assert vdir == str(tmp_path / "color_pages" / "t1" / version)
    assert sorted(os.listdir(vdir)) == [MANIFEST, "pages"]
    assert (tmp_path / "color_pages" / "t1" / LATEST).read_text() == version
    assert list(store.latest_manifest("color_pages", "t1")["id"]) == ["t1/000", "t1/001"]
    # No staging folder or temporary file is left behind.
    leftovers = [p for p in (tmp_path / "color_pages" / "t1").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_same_content_same_version_and_change_changes_it(tmp_path):
    store = Store(tmp_path)
    v1, _, _ = _commit(store, seed=0)
    v2, _, _ = _commit(store, seed=0)
    v3, _, _ = _commit(store, seed=1)
    assert v1 == v2 != v3
    assert store.latest_version("color_pages", "t1") == v3


def test_content_version_ignores_row_order():
    rows = [{"id": "a", "sha256": "1", "status": "ok"}, {"id": "b", "sha256": "2", "status": "ok"}]
    assert content_version(rows) == content_version(rows[::-1])
    assert content_version(rows) != content_version(rows[:1])


def test_uncommitted_staging_is_invisible(tmp_path):
    store = Store(tmp_path)
    w = store.begin("x", "p")
    w.write("pages/a.png", b"123")
    assert store.latest_version("x", "p") is None
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        store.latest_manifest("x", "p")
    w.abort()
    assert not any((tmp_path / "x" / "p").iterdir())


@pytest.mark.parametrize("bad", ["..", "../etc", "/abs/../x", "a/../../b"])
def test_paths_never_escape_root(tmp_path, bad):
    store = Store(tmp_path)
    with pytest.raises(ValueError, match="unsafe path component"):
        store.path("asset", bad)


def test_safe_part_sanitises_untrusted_names():
    assert safe_part("../../etc/passwd") == "etc_passwd"
    assert safe_part("..") .startswith("x")
    assert "/" not in safe_part("a/b\\c")


def test_memory_filesystem_works_like_local():
    store = Store("memory://mangacolor-test-store")
    version, vdir, _ = _commit(store)
    assert store.latest_version("color_pages", "t1") == version
    assert len(store.read_manifest(vdir)) == 2
