"""`predict`: classify image files with a checkpoint, the way `eval` scores the shards.

Each file goes through preprocess's own conversion (`tools.images.convert_image`: shorter side 256,
central square, Lanczos, then the quality-90 JPEG the shards hold) and is decoded again with
Pillow, so the pixels are the ones `eval` reads from the shards (Pillow and DALI's CPU decoder
give identical pixels on these JPEGs, docs/USE.md). Then the eval view(s) with the checkpoint's
normalisation, softmax in fp32 (ten-crop: the mean of the ten softmaxes) and the top k classes.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from alexnet_dali.train.validate import probabilities
from alexnet_dali.use.inference import InferenceModel, eval_views
from alexnet_dali.tools.images import ImageSettings, RejectedImage, allow_pixels, convert_image
from alexnet_dali.tools.scan import walk_files


class TopClass(NamedTuple):
    """One of an image's most probable classes: id, display name (the words, else the WNID),
    WNID (the class folder's name outside ImageNet; None where unknown), probability."""

    class_id: int
    name: str
    wnid: str | None
    prob: float


@dataclass(frozen=True)
class Prediction:
    """One input file's result: its top classes, or an error."""

    file: str
    top: tuple[TopClass, ...] = ()
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """`--json` entry: {"file", "top": [{"class_id", "class", "wnid", "prob"}]} or {"file",
        "error"}."""
        if self.error:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "top": [{"class_id": t.class_id, "class": t.name,
                                            "wnid": t.wnid, "prob": t.prob} for t in self.top]}


def gather_files(inputs: Sequence[str]) -> list[str]:
    """Files as given, directories walked (sorted, symlinks followed, hidden files skipped).

    A path that does not exist stays in the list, so that it is reported like any unreadable file.
    """
    files: list[str] = []
    for item in inputs:
        if Path(item).is_dir():
            found, _ = walk_files(Path(item))
            files.extend(str(Path(item) / rel) for rel in found
                         if not any(part.startswith(".") for part in Path(rel).parts))
        else:
            files.append(item)
    return files


def load_image(path: str, settings: ImageSettings) -> np.ndarray:
    """Any image file → the 256×256×3 uint8 RGB pixels its shard sample would decode to."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise RejectedImage("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None
    jpeg = convert_image(data, settings)  # preprocess's own conversion, JPEG bytes
    with Image.open(io.BytesIO(jpeg)) as img:
        return np.asarray(img.convert("RGB"))


def _load(path: str, settings: ImageSettings) -> np.ndarray | str:
    """The pixels, or the reason the file cannot be read."""
    try:
        return load_image(path, settings)
    except RejectedImage as e:
        return f"{e.reason}: {e.detail}"


@torch.no_grad()
def classify(inference: InferenceModel, images: np.ndarray, *, tencrop: bool, topk: int,
             device: torch.device) -> list[tuple[TopClass, ...]]:
    """Images N×256×256×3 uint8 → per image the top-k classes, most probable first."""
    views = eval_views(torch.from_numpy(images), inference.normalization,
                       inference.cfg.augment.crop, tencrop).to(device)
    probs = probabilities(inference.model, views if tencrop else views[:, 0], tencrop=tencrop)
    values, ids = probs.topk(min(topk, probs.shape[1]), dim=1)
    wnids = inference.wnids or (None,) * len(inference.classes)
    return [tuple(TopClass(i, inference.classes[i], wnids[i], p) for i, p in zip(row_i, row_p))
            for row_i, row_p in zip(ids.tolist(), values.tolist())]


def predict_files(inference: InferenceModel, files: Sequence[str], *, tencrop: bool = False,
                  topk: int = 5, batch_size: int = 32, device: str | torch.device = "cpu",
                  workers: int | None = None, progress: bool = True) -> list[Prediction]:
    """Classify `files` in batches, in input order; unreadable files become error entries."""
    device = torch.device(device)
    inference.model.to(device).eval()
    allow_pixels(inference.image_settings.max_pixels)
    results: list[Prediction] = []
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress, leave=False)
    # Pillow releases the GIL in its C work (the Lanczos resize is most of it): threads convert
    # in parallel.
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), batch_size):
            batch = list(files[start:start + batch_size])
            loaded = list(pool.map(lambda f: _load(f, inference.image_settings), batch))
            good = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
            tops = classify(inference, np.stack([loaded[i] for i in good]), tencrop=tencrop,
                            topk=topk, device=device) if good else []
            by_index = dict(zip(good, tops))
            for i, name in enumerate(batch):
                results.append(Prediction(name, top=by_index[i]) if i in by_index
                               else Prediction(name, error=str(loaded[i])))
            bar.update(len(batch))
    bar.close()
    return results


def format_predictions(results: Sequence[Prediction]) -> str:
    """A readable table: file, then the top classes as `name (id) prob`; an unreadable file's
    row says ERROR and why."""
    width = min(max((len(r.file) for r in results), default=4), 60)
    lines = [f"{'file':<{width}}  top classes (probability)"]
    for r in results:
        name = r.file if len(r.file) <= width else "…" + r.file[-(width - 1):]
        detail = (f"ERROR {r.error}" if r.error else
                  "  ".join(f"{t.name} ({t.class_id}) {t.prob:.3f}" for t in r.top))
        lines.append(f"{name:<{width}}  {detail}")
    return "\n".join(lines)


def write_predictions(results: Sequence[Prediction], path: str | Path) -> None:
    """`--json`: a list, one object per input file in input order (Prediction.to_json)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n")
