"""A small, seeded ImageNet-style dataset: `OUT/{train,val}/<class>/*.JPEG` and
`OUT/synset_words.txt` (each class's words: its shape).

Two kinds:
- `easy` (the demo's): each class is a shape with its own colour, drawn at a random position and
  scale on a random gradient-and-noise background, so a CNN learns the classes in a few epochs
  (and so would a linear model: the colour alone tells the class).
- `hard` (`bench learn`'s): each class is one of `HARD_SHAPES` (16 shapes); every image draws its
  shape's colour, rotation (±20°), scale, position and outline-or-fill at random, independently of
  the class, over a textured background with two distractor blobs. Only the shape tells the
  class, wherever it is: a linear model on the raw pixels stays far below a CNN.
Image sides vary between `min_side` and `max_side` (portrait and landscape). `odd_files=True`
adds the quirks a real dataset has (see `ODD_FILES`).
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "hbars", "vbars")
HARD_SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "hbars", "vbars",
               "star", "hexagon", "saltire", "frame", "crescent", "tee", "ell", "arrow")
HARD_ROTATION = 20.0  # degrees either way: more would turn hbars into vbars, squares into diamonds
SPLIT_IDS = {"train": 0, "val": 1}
WORDS_FILE = "synset_words.txt"  # the name preprocess's folders layout looks for


Kind = Literal["easy", "hard"]  # easy: the demo's; hard: bench learn's (the module docstring)
KINDS = get_args(Kind)


@dataclass(frozen=True)
class SampleDataConfig:
    """What `write_sample_data` generates."""

    classes: int = 4
    train_per_class: int = 64
    val_per_class: int = 16
    min_side: int = 150
    max_side: int = 1000
    seed: int = 0
    odd_files: bool = False
    kind: Kind = "easy"

    @property
    def shapes(self) -> tuple[str, ...]:
        """The shapes the classes cycle through."""
        return HARD_SHAPES if self.kind == "hard" else SHAPES


def class_name(class_id: int) -> str:
    """WordNet-id-like folder name of a class (n00000003)."""
    return f"n{class_id:08d}"


def class_words(class_id: int, shapes: tuple[str, ...] = SHAPES) -> str:
    """What a class shows ("square"; past the last shape, "square 2" and on)."""
    shape, lap = shapes[class_id % len(shapes)], class_id // len(shapes)
    return shape if lap == 0 else f"{shape} {lap + 1}"


def write_class_words(out: Path, classes: int, shapes: tuple[str, ...] = SHAPES) -> Path:
    """OUT/synset_words.txt: a '<wnid> <words>' line per class, which `preprocess` reads for
    the words that predict and eval show."""
    path = out / WORDS_FILE
    path.write_text("".join(f"{class_name(i)} {class_words(i, shapes)}\n"
                            for i in range(classes)))
    return path


def class_colour(class_id: int, classes: int) -> tuple[int, int, int]:
    """A distinct saturated RGB colour per class (evenly spaced hues)."""
    r, g, b = colorsys.hsv_to_rgb((class_id / max(classes, 1)) % 1.0, 0.9, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A random two-colour gradient plus pixel noise, muted so the shape stands out."""
    c0, c1 = rng.integers(40, 200, size=(2, 3))
    t = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height)
    ramp = c0 + (c1 - c0) * t[:, None]  # (n, 3)
    img = np.broadcast_to(ramp[None], (height, width, 3)) if len(t) == width else \
        np.broadcast_to(ramp[:, None], (height, width, 3))
    noise = rng.normal(0.0, 12.0, size=(height, width, 3))
    return Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int],
                colour: tuple[int, int, int]) -> None:
    """Draw one class shape filling `box` (left, top, right, bottom)."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 2
    w = max(r // 3, 2)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        draw.rectangle((cx - w, y0, cx + w, y1), fill=colour)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=w)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "hbars":
        for y in range(y0, y1, 2 * w):
            draw.rectangle((x0, y, x1, min(y + w, y1)), fill=colour)
    else:  # vbars
        for x in range(x0, x1, 2 * w):
            draw.rectangle((x, y0, min(x + w, x1), y1), fill=colour)


def draw_hard_shape(draw: ImageDraw.ImageDraw, shape: str, side: int) -> None:
    """Draw one of `HARD_SHAPES` in white on a `side`-square mask (the first eight as
    `_draw_shape` draws them)."""
    if shape in SHAPES:
        _draw_shape(draw, shape, (0, 0, side - 1, side - 1), 255)
        return
    c, r, w = side / 2, side / 2, max(side // 6, 2)
    if shape in ("star", "hexagon"):
        points = 10 if shape == "star" else 6
        radii = [r if shape == "hexagon" or i % 2 == 0 else r * 0.42 for i in range(points)]
        angles = np.pi * 2 * np.arange(points) / points - np.pi / 2
        draw.polygon([(c + rad * np.cos(a), c + rad * np.sin(a))
                      for rad, a in zip(radii, angles)], fill=255)
    elif shape == "saltire":
        draw.line((0, 0, side - 1, side - 1), fill=255, width=w)
        draw.line((0, side - 1, side - 1, 0), fill=255, width=w)
    elif shape == "frame":
        draw.rectangle((0, 0, side - 1, side - 1), outline=255, width=w)
    elif shape == "crescent":
        draw.ellipse((0, 0, side - 1, side - 1), fill=255)
        draw.ellipse((side * 0.35, -side * 0.1, side * 1.25, side * 0.9), fill=0)
    elif shape == "tee":
        draw.rectangle((0, 0, side - 1, w), fill=255)
        draw.rectangle((c - w / 2, 0, c + w / 2, side - 1), fill=255)
    elif shape == "ell":
        draw.rectangle((0, 0, w, side - 1), fill=255)
        draw.rectangle((0, side - 1 - w, side - 1, side - 1), fill=255)
    else:  # arrow, pointing right
        draw.rectangle((0, c - w / 2, side * 0.6, c + w / 2), fill=255)
        draw.polygon([(side * 0.55, 0), (side - 1, c), (side * 0.55, side - 1)], fill=255)


def make_hard_image(class_id: int, rng: np.random.Generator, min_side: int,
                    max_side: int) -> Image.Image:
    """One RGB image of `HARD_SHAPES[class_id % 16]`: colour, rotation, scale and position drawn
    at random independently of the class, with thin random strokes as distractors."""
    width, height = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    img = _background(rng, width, height)
    side = int(min(width, height) * rng.uniform(0.4, 0.8))
    mask = Image.new("L", (side, side), 0)
    draw_hard_shape(ImageDraw.Draw(mask), HARD_SHAPES[class_id % len(HARD_SHAPES)], side)
    mask = mask.rotate(float(rng.uniform(-HARD_ROTATION, HARD_ROTATION)),
                       resample=Image.Resampling.BILINEAR, expand=True)
    left = int(rng.integers(0, max(width - mask.width, 0) + 1))
    top = int(rng.integers(0, max(height - mask.height, 0) + 1))
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    colour = Image.new("RGB", mask.size, (int(r * 255), int(g * 255), int(b * 255)))
    img.paste(colour, (left, top), mask)
    return img


def make_image(class_id: int, classes: int, rng: np.random.Generator, min_side: int,
               max_side: int) -> Image.Image:
    """One RGB image of class `class_id` with random size, position and scale (`easy`)."""
    width, height = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    img = _background(rng, width, height)
    side = int(min(width, height) * rng.uniform(0.35, 0.8))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    base = np.array(class_colour(class_id, classes))
    colour = tuple(int(v) for v in np.clip(base + rng.integers(-20, 21, size=3), 0, 255))
    _draw_shape(ImageDraw.Draw(img), SHAPES[class_id % len(SHAPES)],
                (left, top, left + side, top + side), colour)
    return img


def _save_jpeg(img: Image.Image, path: Path, **kwargs) -> None:
    img.save(path, format="JPEG", quality=90, **kwargs)


def _png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _odd_files(img: Image.Image) -> dict[str, Callable[[Path], None]]:
    """Writers of the odd files, keyed by file name; each gets the target path."""
    jpeg = io.BytesIO()
    img.save(jpeg, format="JPEG", quality=90)
    i16 = Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257))
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return {
        "odd_cmyk.JPEG": lambda p: _save_jpeg(img.convert("CMYK"), p),
        "odd_gray.JPEG": lambda p: _save_jpeg(img.convert("L"), p),
        "odd_png.JPEG": lambda p: p.write_bytes(_png_bytes(img)),
        "odd_rgba.JPEG": lambda p: p.write_bytes(_png_bytes(img.convert("RGBA"))),
        "odd_palette.JPEG": lambda p: palette.save(p, format="GIF"),
        "odd_i16.JPEG": lambda p: p.write_bytes(_png_bytes(i16)),
        "odd_truncated.JPEG": lambda p: p.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2]),
        "odd_empty.JPEG": lambda p: p.write_bytes(b""),
        "odd_text.JPEG": lambda p: p.write_text("this is not an image\n"),
    }


# Odd file -> the reject reason preprocess must give it, or None when it must be converted.
ODD_FILES: dict[str, str | None] = {
    "odd_cmyk.JPEG": None, "odd_gray.JPEG": None, "odd_png.JPEG": None, "odd_rgba.JPEG": None,
    "odd_palette.JPEG": None, "odd_i16.JPEG": None, "odd_truncated.JPEG": "truncated",
    "odd_empty.JPEG": "empty", "odd_text.JPEG": "not-an-image",
}


def write_sample_data(out: str | Path, config: SampleDataConfig,
                      progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write the dataset under `out`; returns the number of files written per split."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_class_words(out, config.classes, config.shapes)
    counts = {}
    for split, per_class in (("train", config.train_per_class), ("val", config.val_per_class)):
        counts[split] = 0
        for class_id in range(config.classes):
            folder = out / split / class_name(class_id)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rng = np.random.default_rng([config.seed, SPLIT_IDS[split], class_id, i])
                img = (make_hard_image(class_id, rng, config.min_side, config.max_side)
                       if config.kind == "hard" else
                       make_image(class_id, config.classes, rng, config.min_side, config.max_side))
                _save_jpeg(img, folder / f"{class_name(class_id)}_{i:05d}.JPEG")
                counts[split] += 1
                if progress:
                    progress(1)
        if config.odd_files:
            counts[split] += _write_odd(out / split, config)
    return counts


def _write_odd(split_dir: Path, config: SampleDataConfig) -> int:
    """Add every odd file kind to the first class folder of a split."""
    rng = np.random.default_rng([config.seed, 99, SPLIT_IDS.get(split_dir.name, 2)])
    img = make_image(0, config.classes, rng, config.min_side, config.max_side)
    writers = _odd_files(img)
    for name, write in writers.items():
        write(split_dir / class_name(0) / name)
    return len(writers)
