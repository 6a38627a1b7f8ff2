"""The Python API (`Colorizer`): the same pages, hints, references and samples as the CLI, from Python,
loaded from a bundle folder or from a real (SQLite) MLflow registry by alias."""

import mlflow
import numpy as np
import pytest

from mangacolor.inference import Colorizer, InputError
from mangacolor.io.images import encode_png
from mangacolor.inference.registry import promote, register_bundle


def _page(h=80, w=56, seed=0):
    rng = np.random.default_rng(seed)
    page = np.full((h, w), 255, np.uint8)
    page[rng.integers(0, h, 200), rng.integers(0, w, 200)] = 0
    return page


def test_colorize_pages_given_as_paths_or_arrays(bundle, tmp_path):
    c = Colorizer.from_bundle(bundle)
    page = _page()
    (tmp_path / "p.png").write_bytes(encode_png(page))
    out = c.colorize(page)
    assert out.shape == (80, 56, 3) and out.dtype == np.uint8
    assert np.array_equal(c.colorize(tmp_path / "p.png"), out)
    assert np.array_equal(c.colorize(np.repeat(page[..., None], 3, axis=2)), out)  # an RGB scan of the same page

    samples = c.colorize(page, samples=3, seed=1)
    assert isinstance(samples, list) and len(samples) == 3 and not np.array_equal(samples[0], samples[1])
    hinted = c.colorize(page, hints=[{"x": 20, "y": 30, "rgb": [255, 0, 0], "radius": 6}])
    assert hinted.shape == out.shape and not np.array_equal(hinted, out)
    ref = c.colorize(page, reference=np.full((32, 32, 3), (30, 200, 40), np.uint8))
    assert not np.array_equal(ref, out)


def test_unusable_inputs_raise_one_clear_error(bundle, tmp_path):
    c = Colorizer.from_bundle(bundle)
    (tmp_path / "bad.png").write_text("<html>")
    with pytest.raises(InputError, match=r"missing\.png: no such page file"):
        c.colorize(tmp_path / "missing.png")
    with pytest.raises(InputError, match=r"bad\.png: not a usable reference image"):
        c.colorize(_page(), reference=tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"hint image is 90×10 but the page is 56×80"):
        c.colorize(_page(), hints=np.zeros((10, 90, 4), np.uint8))
    with pytest.raises(InputError, match="expected a uint8 array"):
        c.colorize(_page().astype(np.float32))


def test_from_registry_loads_the_champion(bundle, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        exp = mlflow.create_experiment("api", artifact_location=(tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=exp):
            version = register_bundle(bundle)
        promote(version.version)
        page = _page(seed=3)
        from_registry = Colorizer.from_registry("models:/mangacolor-colorizer@champion").colorize(page)
        assert np.array_equal(from_registry, Colorizer.from_bundle(bundle).colorize(page))
    finally:
        mlflow.set_tracking_uri(None)


def test_without_a_model_named_the_champion_is_used_else_the_candidate(bundle, tmp_path, monkeypatch):
    """One rule for `Colorizer.from_registry()`, `mangacolor colorize` and `mangacolor serve`: a fresh
    registry (as after `mangacolor demo`) has only a candidate, and that is what colours."""
    from mangacolor.inference.registry import default_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(FileNotFoundError, match="champion or candidate"):
        default_model()
    exp = mlflow.create_experiment("api", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        version = register_bundle(bundle)  # alias candidate
    page = _page(seed=3)
    assert default_model() == "models:/mangacolor-colorizer@candidate"
    assert np.array_equal(Colorizer.from_registry().colorize(page), Colorizer.from_bundle(bundle).colorize(page))
    promote(version.version)
    assert default_model() == "models:/mangacolor-colorizer@champion"
