"""The Dagster UI and MLflow as an ML engineer uses them, driven in Debian's Chromium (issue 15 point 5).

`dagster dev` (webserver + daemon) runs on 127.0.0.1 with a temporary DAGSTER_HOME on a tiny copy of the
demo corpus (one colour title, one black-and-white title, the matched pairs' title in both, Manga109). As a user would:
the lineage shows every group; the ingest group is launched from its page and its runs succeed; a page of
one title changes on disk, the title sensor observes it and exactly that title's partition shows unsynced;
that partition and the unsynced assets are materialized again and nothing else runs. Then a small
colorization run (in-process, into the same instance) and `colorizer_final` opened: its thumbnails render
and its MLflow link opens the run in `mlflow ui`. Every page loads with all requests outside the two
servers refused. Screenshots of each step go to $MANGACOLOR_TEST_ARTIFACTS/dagster-ui/ (`.ci/run` sets it
to .ci/artifacts), with the dagster and mlflow logs when something fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.assets.test_colorization_assets import CHAIN, TEST_SECTION
from tests.test_serve import CHROMIUM, CHROMIUM_ARGS, _free_port

REPO = Path(__file__).resolve().parents[1]
GROUPS = ["ingest", "synthetic", "drafting", "colorization", "evaluation"]
COLOUR = ["azure_tide", "ember_blade"]  # a colour title and the matched pairs' colour side
BW = ["ember_blade", "night_harbor"]
CHANGED = "azure_tide"
UNPARTITIONED = ["manga109_pages", "page_pairs", "page_splits"]
SLOW = float(os.environ.get("MANGACOLOR_UI_TIMEOUT", 600))  # seconds for a server or a run: a loaded 2-core machine
# The colorization tests' tiny section cut to one step per stage and one snapshot: the run exists to be looked at.
UI_SECTION = TEST_SECTION | {
    "num_workers": 0, "sample_count": 1,
    "step1": TEST_SECTION["step1"] | {"batch_size": 1, "max_steps": 1, "snapshots": 1},
    "step2": TEST_SECTION["step2"] | {"batch_size": 1, "max_steps": 1},
    "finetune": TEST_SECTION["finetune"] | {"epochs": 1, "batch_size": 1},
    "selection": TEST_SECTION["selection"] | {"keep": 1, "validation_pages": 2, "reference_pages": 2, "long_side": 64,
                                              "kid_subsets": 2, "kid_subset_size": 2},
    "pseudolabels": TEST_SECTION["pseudolabels"] | {"colorings_per_page": 1, "max_pages": 1, "long_side": 64, "num_workers": 0},
}


def _artifacts(tmp: Path) -> Path:
    out = Path(os.environ.get("MANGACOLOR_TEST_ARTIFACTS", tmp)) / "dagster-ui"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _poll(what: str, check, timeout: float = SLOW, every: float = 1.0, tab=None):
    """check() until it returns something truthy; a clear failure naming `what` after `timeout` seconds.

    With a browser tab open, wait through the tab: Playwright's sync API runs route handlers (`only_local`) only
    while Python is inside a Playwright call, so a `time.sleep` here holds every request the page makes (the launch
    dialog then spins on "Launching..." for as long as the test waits)."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")
        if tab is None:
            time.sleep(every)
        else:
            tab.wait_for_timeout(every * 1000)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _gql(url: str, query: str, **variables) -> dict:
    req = urllib.request.Request(f"{url}/graphql", json.dumps({"query": query, "variables": variables}).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.load(r)
    assert "errors" not in body, body["errors"]
    return body["data"]


LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
PARTITION_STALE = """query($key: AssetKeyInput!, $p: String!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { staleStatus(partition: $p) } } }"""
ASSET_STALE = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { staleStatus } } }"""
SENSOR = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename ... on Sensor { id } } }"""
STOP_SENSOR = """mutation($id: String!) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""


def _location_loaded(url: str):
    entries = _gql(url, LOCATION)["workspaceOrError"]["locationEntries"]
    for e in entries:
        if e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "PythonError":
            raise AssertionError(f"code location {e['name']} failed to load: {e['locationOrLoadError']['message']}")
    return any(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)


def _stale(url: str) -> set[tuple[str, str | None]]:
    """(asset, partition or None) of the ingest group the server reports STALE: the query the UI's views make."""
    stale = set()
    for asset, titles in (("color_pages", COLOUR), ("bw_pages", BW), *((a, [None]) for a in UNPARTITIONED)):
        for title in titles:
            query, args = (PARTITION_STALE, {"p": title}) if title else (ASSET_STALE, {})
            node = _gql(url, query, key={"path": [asset]}, **args)["assetNodeOrError"]
            if node["staleStatus"] == "STALE":
                stale.add((asset, title))
    return stale


class Project:
    """The temporary project: corpus, preset, instance folder, and the servers' environment."""

    def __init__(self, root: Path, demo_corpus: Path):
        self.root = root
        self.data = root / "demo_data"
        for part in ["color/azure_tide", "bw/night_harbor", "pairs", "manga109"]:  # few partitions: one run each
            shutil.copytree(demo_corpus / part, self.data / part)
        from mangacolor.config import PRESET_DIR
        preset = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text())
        keep = {"color_titles", "color_pairs", "bw_titles", "bw_pairs"}
        preset["sources"] = [s for s in preset["sources"] if s["name"] in keep]
        preset.pop("web_sources", None)
        preset |= {"demo_data": str(self.data), "artifact_root": str(root / "artifacts"), "colorizer": UI_SECTION}
        self.preset = root / "preset.yaml"
        self.preset.write_text(yaml.safe_dump(preset))
        self.home = root / "dagster_home"
        self.home.mkdir()
        instance = yaml.safe_load((REPO / "pipelines" / "dagster.yaml").read_text())
        instance["code_servers"] = {"local_startup_timeout": int(SLOW)}
        # The run queue looks every second (default 5 s) and launches queued runs side by side.
        instance["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                                       "config": {"dequeue_interval_seconds": 1, "dequeue_use_threads": True,
                                                  "dequeue_num_workers": 4}}
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(instance))
        # Dagster greets a new instance with a "Join the Dagster community" modal until someone dismisses it; this
        # instance's user has (the file Dagster writes then), so no modal covers the pages.
        (self.home / ".nux").mkdir()
        (self.home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.dagster_port, self.mlflow_port = _free_port(), _free_port()
        self.url, self.mlflow_url = f"http://127.0.0.1:{self.dagster_port}", f"http://127.0.0.1:{self.mlflow_port}"
        self.env = {
            "MANGACOLOR_HOME": str(root), "DAGSTER_HOME": str(self.home), "MANGACOLOR_PRESET": str(self.preset),
            "MLFLOW_TRACKING_URI": self.tracking_uri, "MANGACOLOR_MLFLOW_UI": self.mlflow_url,
            "MANGACOLOR_MLFLOW_ARTIFACTS": (root / "mlartifacts").as_uri(), "MANGACOLOR_WORK_DIR": str(root / "work"),
            "MANGACOLOR_SENSOR_INTERVAL": "2",  # the title sensor ticks every 2 s instead of every minute
            "MANGACOLOR_EXECUTOR": "in_process",  # one process per run, not one more per step: a small machine
            "MANGACOLOR_THREADS": "1", "OMP_NUM_THREADS": "1", "MANGACOLOR_WORKERS": "0",  # no page-reading processes
            "DAGSTER_GRPC_TIMEOUT_SECONDS": str(int(SLOW)),  # a busy CI machine answers slowly
        }
        self.logs: dict[str, Path] = {}
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], **more_env: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "MANGACOLOR_ARTIFACT_ROOT"} | self.env | more_env
        self.logs[name] = self.root / f"{name}.log"
        proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self.logs[name].open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:  # each its own session: the servers and the processes they started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_corpus):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    proj = Project(tmp_path_factory.mktemp("dagster-ui"), demo_corpus)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(proj.home))  # the instance file reads it; the test opens the same instance
        mp.setenv("MANGACOLOR_MLFLOW_UI", proj.mlflow_url)
        mp.setenv("MANGACOLOR_WORK_DIR", str(proj.root / "work"))
        mp.setenv("MANGACOLOR_MLFLOW_ARTIFACTS", proj.env["MANGACOLOR_MLFLOW_ARTIFACTS"])
        mp.delenv("MANGACOLOR_ARTIFACT_ROOT", raising=False)
        mp.setenv("MANGACOLOR_WORKERS", "0")
        proj.start("dagster", [sys.executable, "-m", "dagster", "dev", "-w", str(REPO / "workspace.yaml"),
                               "-h", "127.0.0.1", "-p", str(proj.dagster_port)])
        # mlflow ui starts beside it (it creates the tracking database the colorization run logs to), without its
        # job runner (eight more Python processes on a 2-core machine; showing runs needs none).
        proj.start("mlflow", [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", proj.tracking_uri,
                              "--host", "127.0.0.1", "--port", str(proj.mlflow_port), "--workers", "1"],
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        try:
            _poll("the Dagster webserver", lambda: _http_ok(f"{proj.url}/server_info"))
            _poll("the mangacolor code location", lambda: _location_loaded(proj.url), every=2)
            yield proj
        finally:
            proj.stop()


@pytest.fixture(scope="module")
def tab(project):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.outside = []
        local = (project.url, project.mlflow_url)

        def only_local(route):
            if route.request.url.startswith(local) or route.request.url.startswith("data:"):
                route.continue_()
            else:  # the UI must not need the internet
                page.outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.set_default_timeout(SLOW * 1000)
        yield page
        browser.close()


@contextlib.contextmanager
def evidence(tab, project, tmp_path):
    """On failure: a screenshot of the page and the servers' logs next to the step screenshots."""
    try:
        yield
    except BaseException:
        out = _artifacts(tmp_path)
        with contextlib.suppress(Exception):
            tab.screenshot(path=str(out / "failure.png"), full_page=True)
        with contextlib.suppress(Exception):
            (out / "failure.html").write_text(tab.content())
        for name, log in project.logs.items():
            if log.exists():
                shutil.copy(log, out / f"{name}.log")
        raise


def _shot(tab, tmp_path, name: str) -> None:
    tab.screenshot(path=str(_artifacts(tmp_path) / f"{name}.png"), full_page=True)


def _materialized(instance, asset: str, after: float = 0.0) -> list[str | None]:
    """Partitions (None: unpartitioned) of `asset` materialized after `after` (a timestamp), oldest first."""
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    return sorted((r.partition_key for r in records if r.timestamp > after), key=str)


def _park(tab) -> None:
    """Leave the UI while the test waits on runs it has launched: the pages' live polling and spinners keep the
    webserver and Chromium busy, and on a 2-core machine that CPU is what the runs need."""
    tab.goto("about:blank")


def _runs_since(instance, after: float) -> list:
    """Runs created after `after` (a timestamp), in any state."""
    return [r for r in instance.get_run_records() if r.create_timestamp.timestamp() > after]


def _runs_finished(instance, after: float) -> list:
    """Runs created after `after`, once none of them is queued or running (else [])."""
    import dagster as dg

    runs = _runs_since(instance, after)
    if not runs or any(r.dagster_run.status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                                                    dg.DagsterRunStatus.CANCELED) for r in runs):
        return []
    return runs


def _assert_succeeded(runs) -> None:
    import dagster as dg

    failed = [(r.dagster_run.run_id, r.dagster_run.status.value) for r in runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    assert not failed, f"runs that did not succeed: {failed}"


@pytest.mark.timeout(1800)
def test_lineage_ingest_a_changed_page_and_only_its_partition_rerun(project, tab, tmp_path):
    instance = project.instance()
    with evidence(tab, project, tmp_path):
        # The title sensor (running by default) registers the titles on its first tick.
        _poll("the title sensor's partitions", lambda: sorted(instance.get_dynamic_partitions("color_titles")) == COLOUR
              and sorted(instance.get_dynamic_partitions("bw_titles")) == BW, tab=tab)

        # 1. The lineage: every group of the graph is on screen.
        tab.goto(f"{project.url}/asset-groups")
        graph = tab.locator("svg foreignObject")  # the graph's nodes, not the group list beside it
        for group in GROUPS:
            graph.get_by_text(group, exact=True).filter(visible=True).first.wait_for()
        _shot(tab, tmp_path, "01-lineage")

        # 2. The ingest group launched from its page ("Materialize all", every partition), its runs succeed.
        started = time.time()
        tab.goto(f"{project.url}/locations/mangacolor/asset-groups/ingest")
        tab.get_by_role("button", name="Materialize all").click()
        _shot(tab, tmp_path, "02-materialize-ingest-dialog")
        tab.get_by_role("button", name=re.compile(r"^Launch (backfill|\d+ runs?)$")).click()
        _poll("the ingest backfill", lambda: instance.get_backfills(), tab=tab)
        _park(tab)
        _poll("the ingest group's materializations", lambda: (
            sorted(_materialized(instance, "color_pages", started)) == COLOUR
            and sorted(_materialized(instance, "bw_pages", started)) == BW
            and all(_materialized(instance, a, started) for a in UNPARTITIONED)), every=2, tab=tab)
        runs = _poll("the ingest runs to finish", lambda: _runs_finished(instance, started), tab=tab)
        _assert_succeeded(runs)
        tab.goto(f"{project.url}/runs")
        tab.get_by_text("Success", exact=True).filter(visible=True).first.wait_for()
        _shot(tab, tmp_path, "03-ingest-runs")
        assert not _stale(project.url)

        # 3. One page of one title changes on disk; the sensor observes that title and only its partition is unsynced.
        from mangacolor.io.images import encode_png, read_image

        page = project.data / "color" / CHANGED / "002.png"
        img = read_image(page)
        img[:40, :40] = 255 - img[:40, :40]
        changed = time.time()
        page.write_bytes(encode_png(img))
        import dagster as dg

        _poll("the title sensor's observation of the changed title", lambda: [
            r for r in instance.fetch_observations(dg.AssetKey("color_sources"), limit=100).records
            if r.partition_key == CHANGED and r.timestamp > changed], tab=tab)
        assert _stale(project.url) == {("color_pages", CHANGED)}
        tab.goto(f"{project.url}/assets/color_pages?view=partitions&partition={CHANGED}")
        tab.get_by_text("Unsynced").filter(visible=True).first.wait_for()
        _shot(tab, tmp_path, "04-stale-partition")

        # 4. Materialize the stale partition; then page_pairs, which reads every colour title, is the one unsynced asset
        # ("Materialize unsynced" lists it alone). Its content does not change (the changed title has no pairs), so
        # its data version stays and page_splits stays synced: nothing else runs.
        rerun = time.time()
        # (The button's accessible name starts with its icon's label, "materialization Materialize…": matched in part.)
        tab.get_by_role("button", name="Materialize…").click()
        dialog = tab.get_by_role("dialog")
        _assert_selected_partitions(dialog, [CHANGED])
        _shot(tab, tmp_path, "05-materialize-partition-dialog")
        dialog.get_by_role("button", name="Launch 1 run", exact=True).click()
        _poll("the partition's run to be queued", lambda: _runs_since(instance, rerun), tab=tab)
        _park(tab)
        _poll("the changed partition's run", lambda: _materialized(instance, "color_pages", rerun) == [CHANGED], every=2, tab=tab)
        _poll("page_pairs to show unsynced", lambda: _stale(project.url) == {("page_pairs", None)}, every=2, tab=tab)
        tab.goto(f"{project.url}/locations/mangacolor/asset-groups/ingest")
        tab.get_by_role("button", name="Materialize all").wait_for(state="visible")
        tab.locator("button:has([aria-label='arrow_drop_down'])").filter(visible=True).first.click()
        tab.get_by_text("Materialize unsynced", exact=True).click()
        dialog = tab.get_by_role("dialog")
        dialog.get_by_role("button", name="Materialize 1 assets", exact=True).wait_for(state="visible")
        dialog.get_by_text("page_pairs", exact=True).first.wait_for(state="visible")
        assert not dialog.get_by_text("page_splits", exact=True).count(), "page_splits listed as unsynced"
        _shot(tab, tmp_path, "06-materialize-unsynced-dialog")
        dialog.get_by_role("button", name="Materialize 1 assets", exact=True).click()
        with contextlib.suppress(Exception):  # unpartitioned assets launch at once; a confirmation may come first
            tab.get_by_role("button", name=re.compile(r"^Launch 1 run$")).click(timeout=5000)
        _poll("page_pairs' run to be queued", lambda: len(_runs_since(instance, rerun)) == 2, tab=tab)
        _park(tab)
        _poll("page_pairs after the change", lambda: _materialized(instance, "page_pairs", rerun), every=2, tab=tab)
        runs = _poll("the reruns to finish", lambda: _runs_finished(instance, rerun), tab=tab)
        _assert_succeeded(runs)
        assert len(runs) == 2, f"expected the partition's run and page_pairs' run, got {len(runs)}"
        assert _materialized(instance, "color_pages", changed) == [CHANGED]
        for asset in ("bw_pages", "manga109_pages", "page_splits"):
            assert _materialized(instance, asset, changed) == [], f"{asset} ran again"
        assert not _stale(project.url)
        tab.goto(f"{project.url}/runs")
        tab.get_by_text("Success", exact=True).filter(visible=True).first.wait_for()
        _shot(tab, tmp_path, "07-reruns")
    assert tab.outside == [], f"the UI asked the internet for {tab.outside[:3]}"


def _assert_selected_partitions(dialog, keys: list[str]) -> None:
    """The launch dialog opened from a partition's page selects that partition: its chips are exactly `keys`."""
    dialog.get_by_text(f"{len(keys)} partition{'s' if len(keys) > 1 else ''}", exact=True).wait_for(state="visible")
    for title in COLOUR:
        chip = dialog.get_by_text(title, exact=True).filter(visible=True)
        if title in keys:
            chip.first.wait_for(state="visible")
        else:
            assert not chip.count(), f"the launch dialog also selects {title}"


def _stop_sensor(url: str, name: str) -> None:
    """What the sensor's toggle in the UI's Automation page does."""
    selector = {"repositoryLocationName": "mangacolor", "repositoryName": "__repository__", "sensorName": name}
    sensor = _gql(url, SENSOR, s=selector)["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    stopped = _gql(url, STOP_SENSOR, id=sensor["id"])["stopSensor"]
    assert stopped.get("instigationState", {}).get("status") == "STOPPED", stopped


def _ingest_in_process(project, instance, defs) -> None:
    """What the first test launched from the UI, for when this test runs alone."""
    import dagster as dg

    from assets.ingest import register_and_observe
    from mangacolor.config import load_preset
    from pipelines.definitions import executable_defs

    if not instance.get_dynamic_partitions("color_titles"):
        register_and_observe(instance, load_preset(str(project.preset)))
    for role in ("color", "bw"):
        for title in instance.get_dynamic_partitions(f"{role}_titles"):
            dg.materialize(executable_defs(defs), selection=[f"{role}_pages"], partition_key=title, instance=instance,
                           resources=defs.resources)
    dg.materialize(executable_defs(defs), selection=["page_pairs", "page_splits"], instance=instance, resources=defs.resources)


@pytest.mark.timeout(1800)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_colorizer_final_shows_its_thumbnails_and_links_its_mlflow_run(project, tab, tmp_path):
    """A small colorization run (the colorization tests' tiny section) in-process into the UI's instance, then
    `colorizer_final` opened in the UI: the `samples` image renders, the `mlflow_run` link opens the run in `mlflow ui`."""
    import dagster as dg
    import mlflow

    from mangacolor.io.store import Store
    from pipelines.definitions import build_definitions, executable_defs
    instance = project.instance()
    defs = build_definitions(preset=str(project.preset), artifact_root=str(project.root / "artifacts"),
                             tracking_uri=project.tracking_uri)
    with evidence(tab, project, tmp_path):
        if Store(project.root / "artifacts").latest_version("page_splits") is None:
            _ingest_in_process(project, instance, defs)
        # The model this run registers would start new_model_version_sensor's two evaluation runs in the servers,
        # minutes of CPU this test does not look at (tests/assets/test_evaluation_assets.py tests the sensor).
        _stop_sensor(project.url, "new_model_version_sensor")
        result = dg.materialize(executable_defs(defs), selection=CHAIN, instance=instance, resources=defs.resources,
                                tags={"mangacolor/launched_by": "test_dagster_ui"})
        assert result.success
        (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "colorizer_final"]
        meta = event.event_specific_data.materialization.metadata
        assert {"samples", "mlflow_run"} <= set(meta), f"colorizer_final's metadata has no thumbnails or MLflow link: {sorted(meta)}"
        link = meta["mlflow_run"].value
        match = re.fullmatch(re.escape(project.mlflow_url) + r"/#/experiments/(\w+)/runs/(\w+)", link)
        assert match, f"mlflow_run is not a run link of {project.mlflow_url}: {link}"
        run = mlflow.MlflowClient(project.tracking_uri).get_run(match[2])
        assert run.info.experiment_id == match[1]

        # The asset's events page (the latest materialization's metadata): the thumbnails render (an image with
        # pixels), the MLflow link is there.
        tab.goto(f"{project.url}/assets/colorizer_final?view=events")
        row = tab.locator("tr", has=tab.get_by_text("samples", exact=True)).first
        row.wait_for(state="visible")
        scope = row
        if not row.locator("img").count():  # markdown values open in a dialog
            row.get_by_text(re.compile("Show Markdown")).click()
            scope = tab.get_by_role("dialog")
        image = scope.locator("img").first
        image.wait_for(state="visible")
        _poll("the samples thumbnails to render", lambda: image.evaluate("i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0"),
              timeout=60, tab=tab)
        _shot(tab, tmp_path, "08-colorizer-final-samples")
        with contextlib.suppress(Exception):
            tab.keyboard.press("Escape")
        anchor = tab.locator(f"a[href='{link}']").first
        anchor.wait_for(state="visible")
        _shot(tab, tmp_path, "09-colorizer-final-mlflow-link")

        # The link, followed: mlflow ui serves the run.
        _poll("mlflow ui", lambda: _http_ok(f"{project.mlflow_url}/health"), tab=tab)
        assert _http_ok(link)  # the page (its #fragment is the browser's)
        with urllib.request.urlopen(f"{project.mlflow_url}/api/2.0/mlflow/runs/get?run_id={match[2]}", timeout=30) as r:
            served = json.load(r)["run"]["info"]
        assert (served["run_id"], served["experiment_id"]) == (match[2], match[1])
        tab.goto(link)
        tab.get_by_text(run.info.run_name, exact=True).first.wait_for(state="visible")
        _shot(tab, tmp_path, "10-mlflow-run")
    assert tab.outside == [], f"the pages asked the internet for {tab.outside[:3]}"
