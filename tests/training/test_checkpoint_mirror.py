"""Checkpoints mirrored to the store (S3-compatible moto server): a fresh pod with an empty work folder resumes."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]


def test_a_killed_stage_resumes_on_a_fresh_pod_from_the_mirror_alone(tmp_path, s3_env):  # noqa: F811
    """What a pod sees: MANGACOLOR_WORK_MIRROR set, no MANGACOLOR_WORK_DIR (the work folder is the project's `.cache/`).
    The refiner's loop is SIGKILLed once a checkpoint reached the mirror, its pod (work folder and all) is deleted,
    and the same stage on a new pod resumes from the mirror and ends bit-identical to a run never killed."""
    from safetensors.torch import load_file

    from tests.training import killdrill

    _, s3 = s3_env
    reference = killdrill.run("refiner", tmp_path / "reference")[0]
    stage = Path(".cache/checkpoints/refiner_model/all/0123456789ab")  # where an asset keeps it, below the work folder
    env = {k: v for k, v in os.environ.items() if k != "MANGACOLOR_WORK_DIR"}
    env |= {"MANGACOLOR_WORK_MIRROR": "s3://mangacolor/pods", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

    def pod(name: str, delay: float) -> subprocess.Popen:
        home = tmp_path / name
        home.mkdir()
        drill = [sys.executable, "-m", "tests.training.killdrill", "refiner", str(home / stage), "--verbose", "--step-delay", str(delay)]
        return subprocess.Popen(drill, cwd=ROOT, env={**env, "MANGACOLOR_HOME": str(home)}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    first = pod("pod1", delay=0.5)
    prefix = f"pods/{stage.relative_to('.cache').as_posix()}/"
    deadline = time.monotonic() + 240
    while first.poll() is None and time.monotonic() < deadline:
        listed = s3.list_objects_v2(Bucket="mangacolor", Prefix=prefix).get("Contents", [])
        if any(o["Key"].endswith("/state.json") for o in listed):
            break
        time.sleep(0.1)
    assert first.poll() is None, f"the first pod ended before a checkpoint reached the mirror:\n{first.communicate()[0][-3000:]}"
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    shutil.rmtree(tmp_path / "pod1")  # the pod is gone, its work folder with it

    second = pod("pod2", delay=0.0)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out[-3000:]
    resumed = [line for line in out.splitlines() if "resuming at step" in line]
    assert resumed and int(resumed[0].split("resuming at step ")[1].split()[0]) >= 1, out[-3000:]
    final = tmp_path / "pod2" / stage / reference.name
    a, b = load_file(str(reference)), load_file(str(final))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
