"""The colorization stages' library (mangacolor/stages/colorization/): variant names, snapshot
choice, per-title fallbacks of the synthetic pairs, and pseudolabels with and without an inversion encoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mangacolor.io.images import encode_png, read_image
from mangacolor.io.store import Store, sha256_bytes
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.models.psp import EncoderConfig, PSp
from mangacolor.models.stylegan2 import StyleGAN2Config, generator_state
from mangacolor.stages.colorization.bundle import drafting_files, stored_inversion
from mangacolor.stages.colorization.config import PseudolabelConfig, SYNTHETIC_LEVELS, VariantFlags
from mangacolor.stages.colorization.data import StorePairs, matched_pairs, synthetic_pairs
from mangacolor.stages.colorization.pseudolabels import make_pseudolabels
from mangacolor.stages.colorization.selection import choose
from mangacolor.stages.common import write_model
from mangacolor.io.weights import save_weights

pytestmark = pytest.mark.filterwarnings("ignore:colorizer encoder is randomly")


def test_variant_tag_names_the_parts_switched_off():
    assert VariantFlags().name() == "full"
    assert VariantFlags(synthetic="xdog").name() == "synthetic_xdog"  # Table 3's rows
    assert VariantFlags(synthetic="refined", adversarial_adaptation=False).name() == "synthetic_refined+no_adaptation"
    assert VariantFlags(use_drafts=False).name() == "no_drafts"
    assert VariantFlags(adversarial_adaptation=False).name() == "no_adaptation"
    assert VariantFlags(self_training=False, adversarial_adaptation=False).name() == "no_adaptation+no_self_training"


def test_choice_follows_the_ranking_or_the_override():
    ranking = pd.DataFrame({"step": [10, 20, 30], "rank": [2, 3, 1]})
    assert choose(ranking, 2, None) == [30, 10]
    assert choose(ranking, 2, [20, 20, 10]) == [20, 10]
    with pytest.raises(ValueError, match="steps \\[10, 20, 30\\]"):
        choose(ranking, 2, [15])


def _commit(store: Store, asset: str, title: str, pages: dict[str, np.ndarray], **columns) -> None:
    writer = store.begin(asset, title)
    for name, image in pages.items():
        data = encode_png(image)
        writer.add({"id": f"{title}/{name}", "title": title, "page": name, "path": writer.write(f"{name}.png", data),
                    "sha256": sha256_bytes(data), "status": "ok", "reason": None,
                    **{k: v.format(title=title, page=name) for k, v in columns.items()}})
    writer.commit()


def test_synthetic_pairs_fall_back_per_title_and_say_so(tmp_path):
    store = Store(tmp_path)
    rng = np.random.default_rng(0)
    colour = {p: rng.integers(0, 256, (40, 32, 3), dtype=np.uint8) for p in ("001", "002")}
    for title in ("a", "b"):
        _commit(store, "color_pages", title, colour)
    _commit(store, "xdog_pages", "a", {p: c.mean(2).astype(np.uint8) for p, c in colour.items()}, source_id="{title}/{page}")
    pairs = synthetic_pairs(store, ["a", "b"], use_drafts=True)
    assert pairs.bw_source == {"a": "xdog_pages", "b": "grey"}
    assert pairs.drafts == "missing" and pairs.rows["draft_uri"].isna().all()
    assert pairs.fallbacks == ["a: xdog_pages instead of synthetic_bw_pages", "b: grey instead of synthetic_bw_pages",
                               "coloring_drafts not materialized: empty drafts"]
    sample = StorePairs(store, pairs.rows)[2]  # title b, page 001: its own grey conversion
    assert sample["bw"].shape == (40, 32) and np.array_equal(sample["color"], colour["001"])


def test_the_synthetic_level_picks_xdog_refined_or_cut_pages(tmp_path):
    """Table 3 as a switch: the same pairs from xDoG pages, refined pages or CUT pages of the same colour pages."""
    store = Store(tmp_path)
    rng = np.random.default_rng(1)
    colour = {p: rng.integers(0, 256, (40, 32, 3), dtype=np.uint8) for p in ("001", "002")}
    _commit(store, "color_pages", "a", colour)
    for asset, value in (("xdog_pages", 10), ("refined_pages", 20), ("synthetic_bw_pages", 30)):
        _commit(store, asset, "a", {p: np.full((40, 32), value, np.uint8) for p in colour}, source_id="{title}/{page}")
    for level, value in (("xdog", 10), ("refined", 20), ("cut", 30)):
        pairs = synthetic_pairs(store, ["a"], use_drafts=False, level=level)
        assert pairs.fallbacks == [] and set(pairs.bw_source.values()) == {SYNTHETIC_LEVELS[level][0]}
        sample = StorePairs(store, pairs.rows)[0]
        assert (sample["bw"] == value).all() and np.array_equal(sample["color"], colour["001"])
    with pytest.raises(ValueError, match="synthetic level"):
        synthetic_pairs(store, ["a"], use_drafts=False, level="grey")


def test_refined_level_falls_back_to_xdog_and_says_so(tmp_path):
    store = Store(tmp_path)
    colour = {"001": np.zeros((40, 32, 3), np.uint8)}
    _commit(store, "color_pages", "a", colour)
    _commit(store, "xdog_pages", "a", {"001": np.zeros((40, 32), np.uint8)}, source_id="{title}/{page}")
    pairs = synthetic_pairs(store, ["a"], use_drafts=False, level="refined")
    assert pairs.fallbacks == ["a: xdog_pages instead of refined_pages"]


# --- pseudolabels ------------------------------------------------------------------------------------

GEN = StyleGAN2Config(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8)


def test_the_fine_tune_reads_only_matched_pairs_of_the_train_split(tmp_path):
    """A split made before a colour title paired with existing pages holds one of them in the holdout:
    the matched-pair fine-tune leaves that pair out and says so."""
    rng = np.random.default_rng(0)
    pages = {p: rng.integers(0, 256, (40, 32), dtype=np.uint8) for p in ("001", "002", "003")}

    def matched(store: Store) -> None:
        writer = store.begin("page_pairs")
        for name in pages:
            data = encode_png(np.stack([pages[name]] * 3, -1))
            writer.add({"id": f"pair:t/{name}", "title": "t", "page": name, "bw_id": f"t/{name}", "color_id": f"t/{name}",
                        "bw_uri": "unused", "path": writer.write(f"{name}.png", data), "sha256": sha256_bytes(data),
                        "status": "ok", "matched": True})
        writer.commit()

    store = Store(tmp_path / "split")
    matched(store)
    writer = store.begin("page_splits")
    for name, split in (("001", "train"), ("002", "holdout"), ("003", "train")):
        writer.add({"id": f"t/{name}", "title": "t", "page": name, "sha256": name, "status": "ok", "split": split})
    writer.commit()

    pairs = matched_pairs(store, use_drafts=False)
    assert sorted(pairs.rows["bw_id"]) == ["t/001", "t/003"]
    assert any("1 matched pairs left out" in n and "t/002" in n for n in pairs.notes)
    # Without a split nothing is known to be train: no real pair reaches the fine-tune.
    unsplit = Store(tmp_path / "no-split")
    matched(unsplit)
    empty = matched_pairs(unsplit, use_drafts=False)
    assert empty.rows.empty and "page_splits not materialized" in empty.notes[0]


def store_drafting_models(store: Store, tmp_path) -> str:
    """A tiny StyleGAN and a colour encoder into the store, as the drafting assets write them; the stylegan version."""
    torch.manual_seed(0)
    g = GEN.generator()
    latent = g.mean_latent(64, torch.Generator().manual_seed(0))
    psp = PSp(EncoderConfig(input_nc=3, input_size=32, widths=(4, 8, 8, 16), units=(1, 1, 1, 1), se_reduction=4), g, latent)
    writer = store.begin("stylegan")
    write_model(writer, save_weights(tmp_path / "stylegan.safetensors", *generator_state(g, latent)), {}, {"steps": 1})
    gan_version, _, _ = writer.commit()
    encoder = save_weights(tmp_path / "encoder.safetensors", *psp.encoder_state())
    for asset in ("inversion_encoder", "drafting_network"):
        writer = store.begin(asset)
        write_model(writer, encoder, {}, {"stylegan_version": gan_version})
        writer.commit()
    return gan_version


def _snapshots(tmp_path) -> list:
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        cfg = ColorizerConfig.tiny()
        path = save_weights(tmp_path / f"snap{seed}.safetensors", build_generator(cfg), {"generator_config": cfg.to_dict()})
        out.append((seed * 100, path))
    return out


def _pages(store: Store) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for name in ("p1", "p2"):
        uri = store.path("bw", f"{name}.png")
        store.write_bytes(uri, encode_png(rng.integers(0, 256, (48, 40), dtype=np.uint8)))
        rows.append({"id": f"t/{name}", "title": "t", "page": name, "uri": uri})
    return pd.DataFrame(rows)


def test_pseudolabels_differ_by_snapshot_then_by_inverted_draft(tmp_path):
    store = Store(tmp_path / "store")
    store_drafting_models(store, tmp_path)
    inversion = stored_inversion(store, torch.device("cpu"))
    writer = store.begin("pseudolabels")
    summary = make_pseudolabels(store, _pages(store), _snapshots(tmp_path), writer,
                                       PseudolabelConfig(colorings_per_page=3), torch.device("cpu"), inversion)
    _, vdir, frame = writer.commit()
    assert (summary.pages, summary.colorings, summary.per_page, summary.notes) == (2, 6, 3, [])
    page = frame[frame.bw_id == "t/p1"].sort_values("coloring")
    assert list(page.snapshot) == [100, 200, 100]
    assert list(page.kind) == ["auto+inverted_draft", "auto+inverted_draft", "mixed_draft"]
    labels = [read_image(f"{vdir}/{p}") for p in page.path]
    assert all(label.shape == (48, 40, 3) for label in labels)
    assert len({label.tobytes() for label in labels}) == 3  # three distinct colorings of one page
    drafts = [read_image(f"{vdir}/{p}") for p in page.draft_path]
    assert drafts[0].shape == (32, 32, 3) and not np.array_equal(drafts[0], drafts[2])  # random CLS rows changed the draft


def test_without_inversion_a_page_gets_one_coloring_per_snapshot(tmp_path):
    store = Store(tmp_path / "store")
    writer = store.begin("pseudolabels")
    summary = make_pseudolabels(store, _pages(store), _snapshots(tmp_path), writer,
                                       PseudolabelConfig(colorings_per_page=3), torch.device("cpu"), None)
    _, _, frame = writer.commit()
    assert summary.per_page == 2 and "without the inversion encoder" in summary.notes[0]
    assert frame.groupby("bw_id").size().tolist() == [2, 2] and frame.draft_path.isna().all()


def test_bundle_parts_share_the_generator_the_drafting_network_was_trained_against(tmp_path):
    from mangacolor.inference.bundle import ModelBundle
    from mangacolor.io.bundle import write_bundle

    store = Store(tmp_path / "store")
    assert drafting_files(store, tmp_path / "none") == ({}, ["drafting_network not materialized: bundle without drafting",
                                                                  "inversion_encoder not materialized: bundle without inversion"])
    gan_version = store_drafting_models(store, tmp_path)
    files, notes = drafting_files(store, tmp_path / "parts")
    assert sorted(files) == ["drafting", "inversion", "stylegan"]
    assert notes == ["drafting_network_final not materialized: the bundle drafts with the first-round drafting network"]
    # The drafting network's second round (pseudolabelled real pages too), once there, is the one shipped.
    final_weights = tmp_path / "final.safetensors"
    final_weights.write_bytes(files["drafting"].read_bytes() + b"")
    writer = store.begin("drafting_network_final")
    write_model(writer, final_weights, {}, {"stylegan_version": gan_version})
    final_dir = writer.commit(salt="second round")[1]
    files, notes = drafting_files(store, tmp_path / "parts_final")
    assert notes == [] and files["drafting"].read_bytes() == Store(tmp_path / "store").read_bytes(f"{final_dir}/weights/model.safetensors")
    (_, colorizer), _ = _snapshots(tmp_path)
    bundle = ModelBundle.load(write_bundle(tmp_path / "bundle", {"colorizer": colorizer, **files},
                                           {"colorizer_config": ColorizerConfig.tiny().to_dict()}))
    page = np.random.default_rng(0).integers(0, 256, (48, 40), dtype=np.uint8)
    draft = bundle.drafts(page)[0]
    assert draft.shape == (1, 3, 32, 32) and bundle.colorize(page, draft=draft).shape == (48, 40, 3)

    writer = store.begin("inversion_encoder")  # retrained against another StyleGAN: cannot share the bundle's
    write_model(writer, files["inversion"], {}, {"stylegan_version": "other"})
    writer.commit(salt="other")
    files, notes = drafting_files(store, tmp_path / "parts2")
    assert sorted(files) == ["drafting", "stylegan"] and f"against {gan_version}" in notes[0]


def test_the_loop_config_is_derived_from_the_preset_section_and_its_step():
    from dataclasses import fields

    from mangacolor.stages.colorization.config import ColorizationConfig, StepSection
    from mangacolor.training.colorizer import ColorizerTrainConfig

    # Every field of the loop's config can be set from the preset: the whole section or the step's.
    assert {f.name for f in fields(ColorizerTrainConfig)} <= set(ColorizationConfig.model_fields) | set(StepSection.model_fields)
    cfg = ColorizationConfig(num_workers=3, prefetch_factor=5, sample_count=2, log_every=7, crop=(64, 48),
                             step1={"lr_g": 3e-4, "max_steps": 9, "losses": {"per": 0}})
    loop = cfg.train_config("step1", "adapt")
    assert (loop.num_workers, loop.prefetch_factor, loop.sample_count, loop.log_every) == (3, 5, 2, 7)
    assert (loop.lr_g, loop.lr_d, loop.max_steps, loop.losses.per) == (3e-4, 4e-4, 9, 0)
    assert (loop.epochs, loop.batch_size) == (15, 4)  # Appendix D's step 1, where the section leaves them open
    assert loop.canvas == loop.page_canvas() == cfg.page_canvas() == (64, 48)
    assert loop.total_steps("adapt", 10) == 9 and loop.steps_per_epoch("adapt", 10) == 2
