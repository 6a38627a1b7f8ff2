"""Checkpoints mirrored to the store (S3-compatible moto server): a fresh pod with an empty work folder resumes."""

import pytest
import torch

from mangacolor.training.checkpoint import Checkpointer
from tests.deploy.conftest import s3_env, s3_server  # noqa: F401  (fixtures)


def test_a_fresh_work_folder_resumes_from_the_mirror(tmp_path, monkeypatch, s3_env):  # noqa: F811
    _, s3 = s3_env
    monkeypatch.setenv("MANGACOLOR_WORK_MIRROR", "s3://mangacolor/work")
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(tmp_path / "pod1"))
    first = Checkpointer(tmp_path / "pod1" / "checkpoints" / "stylegan" / "all" / "abc", keep_last=2)
    for step in (10, 20, 30):
        first.save(step, {"g": net}, {"g": opt}, {"note": step})
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="mangacolor", Prefix="work/")["Contents"]}
    steps = {k.split("/")[-2] for k in keys}
    assert steps == {"step-00000020", "step-00000030"}  # pruned remotely as locally
    assert "work/checkpoints/stylegan/all/abc/step-00000030/state.json" in keys

    # Another pod: its own, empty, work folder.
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(tmp_path / "pod2"))
    fresh = torch.nn.Linear(3, 2)
    second = Checkpointer(tmp_path / "pod2" / "checkpoints" / "stylegan" / "all" / "abc")
    state = second.restore({"g": fresh}, {"g": torch.optim.Adam(fresh.parameters())})
    assert state["step"] == 30 and state["extra"] == {"note": 30}
    assert torch.equal(fresh.weight, net.weight)


def test_without_a_mirror_nothing_leaves_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MANGACOLOR_WORK_MIRROR", raising=False)
    assert Checkpointer(tmp_path / "c").mirror is None
    assert Checkpointer(tmp_path / "c").latest() is None


def test_crawl_state_folder_survives_a_new_pod(tmp_path, monkeypatch, s3_env):  # noqa: F811
    from assets.common import mirrored_dir

    monkeypatch.setenv("MANGACOLOR_WORK_MIRROR", "s3://mangacolor/work")
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(tmp_path / "pod1"))
    with pytest.raises(RuntimeError):
        with mirrored_dir(tmp_path / "pod1" / "crawl" / "site") as crawl:
            (crawl / "pages").mkdir()
            (crawl / "pages" / "001.png").write_bytes(b"png")
            (crawl / "index.json").write_text('{"etag": "x"}')
            raise RuntimeError("pod killed")  # what was fetched so far is kept
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(tmp_path / "pod2"))
    with mirrored_dir(tmp_path / "pod2" / "crawl" / "site") as crawl:
        assert (crawl / "index.json").read_text() == '{"etag": "x"}'
        assert (crawl / "pages" / "001.png").read_bytes() == b"png"
