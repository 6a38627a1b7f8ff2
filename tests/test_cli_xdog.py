"""`mangacolor xdog IN... -o OUT`: line art of a page or a folder, with the preset's parameter set."""

import numpy as np

from mangacolor.cli import main
from mangacolor.demo.corpus import render_page
from mangacolor.io.images import encode_png, read_image
from mangacolor.synthetic.xdog import xdog


def test_xdog_page_and_folder_with_presets(tmp_path, capsys):
    rng = np.random.default_rng(0)
    colour = [render_page(rng, size=(96, 64)).color for _ in range(2)]
    (tmp_path / "in" / "ch1").mkdir(parents=True)
    for i, c in enumerate(colour):
        (tmp_path / "in" / "ch1" / f"{i}.png").write_bytes(encode_png(c))

    # one page to one file, the default preset `paper` (authors2021, the paper's parameter set)
    assert main(["xdog", str(tmp_path / "in" / "ch1" / "0.png"), "-o", str(tmp_path / "one.png"), "--quiet"]) == 0
    one = read_image(tmp_path / "one.png", mode=None)
    assert one.shape == (96, 64) and np.array_equal(one, xdog(colour[0], "authors2021"))

    # a folder, mirrored, with the demo preset's section (alacgan) or a parameter set named directly
    assert main(["xdog", str(tmp_path / "in"), "-o", str(tmp_path / "demo"), "--preset", "demo", "--quiet"]) == 0
    assert main(["xdog", str(tmp_path / "in"), "-o", str(tmp_path / "generic"), "--preset", "generic", "--quiet"]) == 0
    for i, c in enumerate(colour):
        demo = read_image(tmp_path / "demo" / "ch1" / f"{i}.png", mode=None)
        assert np.array_equal(demo, xdog(c, "alacgan"))
        assert not np.array_equal(demo, read_image(tmp_path / "generic" / "ch1" / f"{i}.png", mode=None))
    assert "2 page(s) drawn as xDoG line art" in capsys.readouterr().out

    assert main(["xdog", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--preset", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "authors2021" in err
