"""Evaluation sets read lazily, and the true colours of held-out matched pairs (mangacolor/eval/sets.py)."""

import numpy as np
import pandas as pd

from mangacolor.eval.sets import LazyPages, content_key, matched_truth_uris
from mangacolor.io.images import encode_png
from mangacolor.io.store import Store


def test_held_out_matched_pairs_give_their_aligned_colour_pages(tmp_path):
    st = Store(str(tmp_path))
    rows = pd.DataFrame({"id": ["t/001", "t/002", "t/003"], "uri": ["a", "b", "c"], "sha256": ["1", "2", "3"]})
    assert matched_truth_uris(st, rows) == [None, None, None]  # no page_pairs yet
    colour = np.zeros((16, 12, 3), np.uint8)
    colour[..., 0] = 200
    writer = st.begin("page_pairs")
    path = writer.write("pairs/t/001.png", encode_png(colour))
    writer.add({"id": "t/001", "bw_id": "t/001", "matched": True, "path": path, "status": "ok"})
    writer.add({"id": "t/002", "bw_id": "t/002", "matched": False, "path": None, "status": "rejected"})
    writer.commit()
    uris = matched_truth_uris(st, rows)
    assert uris[1:] == [None, None] and uris[0].endswith("pairs/t/001.png")
    lazy = LazyPages(st, uris, "RGB")
    assert [lazy.present(i) for i in range(3)] == [True, False, False]
    assert np.array_equal(lazy[0], colour) and lazy[1] is None
    assert content_key(rows) == content_key(rows.copy()) != content_key(rows.assign(sha256=["1", "2", "4"]))
