"""docs/USE.md's "In Python" snippets, run as written against what `make demo` leaves.

In a temporary folder that holds what the snippets read, as after `make demo`: `demo/raw` (the
sample data), `demo/run` (a checkpoint of a random-weight paper AlexNet with the sample data's
classes) and `demo/alexnet.pt` (its TorchScript export). Each ```python block of the section is
run as its own script, unchanged, in a fresh interpreter from that folder.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet_dali.model.checkpoint import new_state, save_checkpoint
from alexnet_dali.config.schema import ModelConfig, TrainConfig
from alexnet_dali.use.export import export_model
from alexnet_dali.use.inference import load_for_inference
from alexnet_dali.model.alexnet import build_model
from alexnet_dali.tools.pca import load_colour_stats
from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

USE = Path(__file__).resolve().parent.parent / "docs" / "USE.md"
pytestmark = pytest.mark.slow


def snippets(markdown: str, section: str) -> list[str]:
    """The ```python blocks of the `## section` of a Markdown text."""
    body = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo/raw, demo/shards (for the class list), demo/run and demo/alexnet.pt."""
    from alexnet_dali.tools.pca import pca_stats

    root = tmp_path_factory.mktemp("use")
    demo = root / "demo"
    write_sample_data(demo / "raw", SampleDataConfig(classes=4, train_per_class=4,
                                                     val_per_class=1, max_side=300))
    preprocess(demo / "raw", demo / "shards", PreprocessConfig(workers=1), progress=False,
               class_names=None, notify=lambda line: None)
    pca_stats(demo / "shards", workers=1, mean_image=True, progress=False)
    cfg = TrainConfig(data=str(demo / "shards"), model=ModelConfig(num_classes=4, init="he"))
    torch.manual_seed(0)
    from alexnet_dali.loader.data import class_list

    state = new_state(model=build_model(cfg.model).state_dict(), config=cfg, epoch=1,
                      global_step=1, classes=class_list(cfg.data),
                      colour_stats=load_colour_stats(cfg.data, need_mean_image=False))
    save_checkpoint(demo / "run", state, keep=1)
    export_model(load_for_inference(demo / "run"), "torchscript", demo / "alexnet.pt",
                 check=False)
    yield root
    shutil.rmtree(root)  # 0.46 GB: not kept for the rest of the session


def run_snippet(code: str, cwd: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_section_has_both_snippets() -> None:
    codes = snippets(USE.read_text(), "In Python")
    assert len(codes) == 2
    assert "load_for_inference" in codes[0] and "torch.jit.load" in codes[1]


def test_classify_one_image_with_a_checkpoint(demo_folder) -> None:
    code = snippets(USE.read_text(), "In Python")[0]
    lines = run_snippet(code, demo_folder)
    assert len(lines) == 3
    shapes = "|".join(["disc", "square", "triangle", "cross"])
    for line in lines:
        assert re.fullmatch(rf"({shapes}) \(id [0-3], n0000000[0-3]\): [01]\.\d{{3}}", line), line
    probs = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001


def test_classify_one_image_with_the_exported_module(demo_folder) -> None:
    code = snippets(USE.read_text(), "In Python")[1]
    lines = run_snippet(code, demo_folder)
    assert len(lines) == 1
    assert re.fullmatch(r"(disc|square|triangle|cross) \(id [0-3]\): [01]\.\d{3}", lines[0])
    # the same class as the checkpoint's own snippet finds first
    first = run_snippet(snippets(USE.read_text(), "In Python")[0], demo_folder)[0]
    assert first.split(" (id ")[0] == lines[0].split(" (id ")[0]
