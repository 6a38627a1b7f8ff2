"""The store against a real S3-compatible server (moto's, on 127.0.0.1), through s3fs."""

import numpy as np
import pytest

from mangacolor.io.images import encode_png, read_image
from mangacolor.io.store import Store

moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket="mangacolor")
    yield url
    server.stop()


def test_store_commits_and_reads_on_s3(s3_endpoint):
    opts = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    store = Store("s3://mangacolor/artifacts", opts)
    page = np.full((16, 12, 3), 200, np.uint8)
    w = store.begin("color_pages", "demo")
    path = w.write("pages/001.png", encode_png(page))
    w.add({"id": "demo/001", "sha256": "x", "status": "ok", "path": path})
    version, vdir, _ = w.commit()
    assert store.uri("color_pages").startswith("s3://mangacolor/artifacts/")
    fresh = Store("s3://mangacolor/artifacts", opts)
    assert fresh.latest_version("color_pages", "demo") == version
    frame = fresh.latest_manifest("color_pages", "demo")
    assert np.array_equal(read_image(fresh.read_bytes(f"{vdir}/{frame.loc[0, 'path']}")), page)
    assert not [p for p in fresh.fs.find("mangacolor/artifacts") if ".staging-" in p]


def test_two_writers_on_s3_serialise_through_the_lock_object_and_verify_clean(s3_endpoint):
    """The lock object is created with a conditional PUT (If-None-Match: *): one writer at a time seals and commits."""
    import json
    import threading
    import time

    from mangacolor.io.store import LOCKS_DIR, verify

    opts = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    root = "s3://mangacolor/concurrent"
    # A lock left by a writer that died long ago is broken, not waited on for ever.
    stale = Store(root, opts)
    stale.fs.pipe_file(stale.path(LOCKS_DIR, "pages", "all.lock"), json.dumps({"owner": "dead", "at": time.time() - 86400}).encode())
    versions, errors = [], []

    def write(who: str) -> None:
        try:
            store = Store(root, opts)
            for round_ in range(3):
                w = store.begin("pages")
                for i in range(3):
                    w.add({"id": f"{i}", "path": w.write(f"p/{i}.txt", f"{round_}-{who}-{i}".encode()), "status": "ok"})
                versions.append(w.commit()[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(who,)) for who in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    store = Store(root, opts)
    assert store.latest_version("pages") in versions
    checked, problems = verify(store)
    assert checked == 6 and problems == []
    assert not store.fs.exists(store.path(LOCKS_DIR, "pages", "all.lock"))


def _opts(endpoint: str) -> dict:
    return {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


class _Pages:
    """A dataset whose items are read through the store, as the training loaders and page stages read."""

    def __init__(self, store: Store, paths: list[str]):
        self.store, self.paths = store, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        return len(self.store.read_bytes(self.paths[i]))


def test_loader_workers_read_through_a_store_the_parent_used(s3_endpoint):
    """s3fs refuses to run in a forked child of the process that used it: each worker opens its own filesystem."""
    import multiprocessing

    from torch.utils.data import DataLoader

    store = Store("s3://mangacolor/forked", _opts(s3_endpoint))
    paths = [store.path(f"p/{i}.bin") for i in range(6)]
    for i, path in enumerate(paths):
        store.write_bytes(path, b"x" * (i + 1))
    assert store.read_bytes(paths[0]) == b"x"  # the parent's filesystem is in use before the fork
    loader = DataLoader(_Pages(store, paths), batch_size=None, num_workers=2,
                        multiprocessing_context=multiprocessing.get_context("fork"))
    assert list(loader) == [1, 2, 3, 4, 5, 6]
    assert store.read_bytes(paths[5]) == b"x" * 6  # and the parent's still works


def test_listings_are_fresh_for_what_another_process_commits(s3_endpoint):
    """A long-lived process (the code server's sensor) sees a partition, a LATEST and a source title that another
    process wrote after it listed (s3fs would answer from the listing it cached)."""
    import boto3

    from mangacolor.data.sources import SourceConfig, list_titles

    other = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                         region_name="us-east-1")
    store = Store("s3://mangacolor/fresh", _opts(s3_endpoint))
    w = store.begin("pages", "a")
    w.add({"id": "a/1", "path": w.write("1.txt", b"1"), "status": "ok"})
    w.commit()
    assert store.partitions("pages") == ["a"] and store.latest_version("pages", "b") is None
    # Another pod commits partition b.
    other.put_object(Bucket="mangacolor", Key="fresh/pages/b/v1/manifest.parquet", Body=b"m")
    other.put_object(Bucket="mangacolor", Key="fresh/pages/b/LATEST", Body=b"v1")
    assert store.partitions("pages") == ["a", "b"]
    assert store.latest_version("pages", "b") == "v1"

    source = SourceConfig(name="web", role="color", uri="s3://mangacolor/source", storage_options=_opts(s3_endpoint))
    other.put_object(Bucket="mangacolor", Key="source/one/001.png", Body=b"png")
    assert list_titles(source) == ["one"]
    other.put_object(Bucket="mangacolor", Key="source/two/001.png", Body=b"png")
    assert list_titles(source) == ["one", "two"]
