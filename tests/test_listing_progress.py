"""Listing a large source takes minutes (1.3 M tar headers or files): preprocess shows bars while
it lists, and none when asked for no progress."""

from __future__ import annotations

import pytest
from miniature import make_miniature, write_extracted, write_official

from alexnet_dali.tools import preprocess as pp

CONFIG = pp.PreprocessConfig(shard_size=4, workers=1, seed=3)


@pytest.mark.parametrize("layout, shown", [
    ("official", "list ILSVRC2012_img_train.tar"), ("folders", "/train"), ])
def test_listing_shows_a_bar(tmp_path, capsys, layout, shown):
    mini = make_miniature()
    src = (write_official if layout == "official" else write_extracted)(mini, tmp_path / "src")
    pp.preprocess(src, tmp_path / "out", CONFIG, progress=True, notify=lambda _: None)
    err = capsys.readouterr().err
    listed = [line for line in err.replace("\r", "\n").splitlines()
              if line.startswith(("list ", "check "))]
    assert any(shown in line for line in listed), err
    pp.preprocess(src, tmp_path / "quiet", CONFIG, progress=False, notify=lambda _: None)
    assert capsys.readouterr().err == ""
