"""The S3 lock cannot be held twice (issue 22, item 6), on moto's S3-compatible server through s3fs.

Before: two waiters that both saw one stale lock object both deleted it, so one could delete the lock
the other had just created, and both held it; and a holder busy for longer than 900 s was broken
whatever it was doing.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from mangacolor.io import store as store_mod
from mangacolor.io.store import LOCKS_DIR, LockLost, LockTimeout, Store

pytest.importorskip("moto.server")
from tests.io.test_store_s3 import s3_endpoint  # noqa: E402,F401 - moto's server, with the bucket `mangacolor`

ROUNDS = 50


@pytest.fixture(scope="module")
def s3_opts(s3_endpoint):  # noqa: F811 - the imported fixture, by name
    """Each Store its own s3fs client, as two processes would have."""
    return {"key": "test", "secret": "test", "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}


def _plant(store: Store, partition: str, body: dict) -> None:
    store.fs.pipe_file(store.path(LOCKS_DIR, "pages", partition + ".lock"), json.dumps(body).encode())


def test_two_waiters_racing_for_one_stale_lock_never_both_hold_it(s3_opts):
    root = "s3://mangacolor/locks/race"
    stores = [Store(root, s3_opts) for _ in range(2)]
    guard = threading.Lock()
    holders = {"now": 0, "most": 0, "entries": 0}
    errors: list[BaseException] = []

    def wait_for(store: Store, partition: str, start: threading.Barrier) -> None:
        try:
            start.wait(10)
            with store.lock("pages", partition, timeout_s=30):
                with guard:
                    holders["now"] += 1
                    holders["entries"] += 1
                    holders["most"] = max(holders["most"], holders["now"])
                time.sleep(0.05)  # the other waiter is breaking and re-trying meanwhile
                with guard:
                    holders["now"] -= 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for round_ in range(ROUNDS):
        partition = f"r{round_}"
        _plant(stores[0], partition, {"owner": "dead", "pid": 1, "renewed_at": time.time() - 3600, "lease_s": 60})
        start = threading.Barrier(2)
        threads = [threading.Thread(target=wait_for, args=(s, partition, start)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [], f"round {round_}: {errors!r}"
        assert holders["most"] == 1, f"round {round_}: the lock was held by {holders['most']} writers at once"
    assert holders["entries"] == 2 * ROUNDS  # every waiter got it, one after the other
    assert not stores[0].fs.find(f"mangacolor/locks/race/{LOCKS_DIR}")  # every lock released


def test_a_live_holder_renews_its_lease_and_is_never_broken(s3_opts, monkeypatch):
    monkeypatch.setattr(store_mod, "LOCK_LEASE_S", 0.8)
    a, b = Store("s3://mangacolor/locks/live", s3_opts), Store("s3://mangacolor/locks/live", s3_opts)
    with a.lock("pages") as held:
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="another writer held the lock"):
            with b.lock("pages", timeout_s=2.5):  # three leases: an unrenewed lock would be broken twice over
                pass
        assert time.monotonic() - started >= 2.5
        assert not held.lost
        held.check()
    with b.lock("pages", timeout_s=1):  # released: taken at once
        pass


def test_a_holder_that_stopped_renewing_is_broken_and_finds_out_before_it_commits(s3_opts, monkeypatch):
    """A frozen writer (a paused VM, a SIGSTOP: its renewals stop too) loses the lock after one lease;
    when it wakes, its next renewal fails and `check()`, which seal and commit call before they move
    anything, raises LockLost."""
    monkeypatch.setattr(store_mod, "LOCK_LEASE_S", 0.5)
    original = store_mod.S3Lease._renew
    wake = threading.Event()

    def frozen_renew(self) -> None:
        wake.wait()
        original(self)

    monkeypatch.setattr(store_mod.S3Lease, "_renew", frozen_renew)
    frozen = Store("s3://mangacolor/locks/frozen", s3_opts)
    cm = frozen.lock("pages")
    held = cm.__enter__()
    monkeypatch.setattr(store_mod.S3Lease, "_renew", original)
    other = Store("s3://mangacolor/locks/frozen", s3_opts)
    with other.lock("pages", timeout_s=5) as theirs:  # broken after one lease
        wake.set()
        for _ in range(50):
            if held.lost:
                break
            time.sleep(0.05)
        with pytest.raises(LockLost, match="taken from this writer"):
            held.check()
        assert not theirs.lost
        cm.__exit__(None, None, None)  # no delete: the lock object is the other writer's now
        assert other.fs.exists(other.path(LOCKS_DIR, "pages", "all.lock"))


def test_a_malformed_lock_body_expires_instead_of_spinning(s3_opts, monkeypatch):
    """Before: a lock object that was not JSON made the waiter retry at once, for ever (no timeout)."""
    monkeypatch.setattr(store_mod, "LOCK_LEASE_S", 0.5)
    store = Store("s3://mangacolor/locks/garbage", s3_opts)
    store.fs.pipe_file(store.path(LOCKS_DIR, "pages", "all.lock"), b"\xff not json")
    started = time.monotonic()
    with store.lock("pages", timeout_s=10):
        pass
    assert time.monotonic() - started < 5
