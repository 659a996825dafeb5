"""Per-image conversion: modes to RGB, draft decoding, the centre crop geometry, rejects."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_dali.tools import images
from alexnet_dali.tools.images import ImageSettings, RejectedImage


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def smooth_image(width: int, height: int) -> Image.Image:
    """Smooth gradients (no detail finer than a few pixels), RGB uint8."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([128 + 100 * np.sin(6 * x), 128 + 100 * np.cos(5 * y), 255 * x * y], -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    grey = np.array([[0, 257 * 100, 65535]], np.uint16)
    rgb = np.asarray(images.to_rgb(Image.fromarray(grey)))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 100, 255])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "1", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    img = smooth_image(20, 10).convert(mode) if mode not in ("I", "F") else \
        Image.fromarray(np.arange(200, dtype=np.int32 if mode == "I" else np.float32)
                        .reshape(10, 20))
    assert images.to_rgb(img).mode == "RGB"


def test_palette_with_transparency_keeps_its_colours():
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
    img.info["transparency"] = 0
    np.testing.assert_array_equal(np.asarray(images.to_rgb(img))[0, 0], [200, 10, 30])


def test_centre_square_matches_resize_then_crop():
    # left third red, middle blue, right third green: the centre square is all blue
    strip = np.zeros((300, 900, 3), np.uint8)
    strip[:, :300, 0] = strip[:, 300:600, 2] = strip[:, 600:, 1] = 255
    out = np.asarray(images.center_square_resize(Image.fromarray(strip), 256)).astype(int)
    assert out.shape == (256, 256, 3)
    assert (out[:, 8:-8, 2] > 250).all() and (out[:, 8:-8, :2] < 5).all()


def test_draft_only_when_twice_the_target_remains():
    settings = ImageSettings(size=256)
    assert images.decode(jpeg_bytes(smooth_image(2000, 1500)), settings).size == (1000, 750)
    assert images.decode(jpeg_bytes(smooth_image(1100, 1030)), settings).size == (550, 515)
    assert images.decode(jpeg_bytes(smooth_image(1000, 1030)), settings).size == (1000, 1030)
    assert images.decode(jpeg_bytes(smooth_image(4000, 600)), settings).size == (4000, 600)
    off = ImageSettings(draft=False)
    assert images.decode(jpeg_bytes(smooth_image(2000, 1500)), off).size == (2000, 1500)


def test_draft_output_is_close_to_full_decode():
    data = jpeg_bytes(smooth_image(2400, 1800))
    with_draft = images.convert_image(data, ImageSettings(draft=True))
    without = images.convert_image(data, ImageSettings(draft=False))
    a, b = (np.asarray(Image.open(io.BytesIO(d)), np.float64) for d in (with_draft, without))
    assert a.shape == (256, 256, 3) and np.abs(a - b).mean() < 1.0


def test_cmyk_jpeg_converts_like_pillow():
    img = smooth_image(300, 200)
    data = jpeg_bytes(img.convert("CMYK"))
    out = np.asarray(Image.open(io.BytesIO(images.convert_image(data, ImageSettings()))), float)
    ref = Image.open(io.BytesIO(data)).convert("RGB").resize((384, 256), Image.LANCZOS)
    ref = np.asarray(ref.crop((64, 0, 320, 256)), float)
    assert np.abs(out - ref).mean() < 3.0


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"), (b"GIF89a not really", "not-an-image"), (b"hello\n", "not-an-image")])
def test_bad_bytes_are_rejected_with_reason(data, reason):
    with pytest.raises(RejectedImage) as info:
        images.convert_image(data, ImageSettings())
    assert info.value.reason == reason


def test_pixel_limit_rejects_decompression_bombs():
    data = jpeg_bytes(smooth_image(600, 500))
    with pytest.raises(RejectedImage, match="600x500 = 300000 pixels > limit 299999") as info:
        images.convert_image(data, ImageSettings(max_pixels=299_999))
    assert info.value.reason == "decompression-bomb"
    assert len(images.convert_image(data, ImageSettings(max_pixels=300_000))) > 0


def test_unexpected_decoder_errors_become_rejects_not_crashes(monkeypatch):
    def broken(img, size):
        raise IndexError("corrupt Huffman table")

    monkeypatch.setattr(images, "center_square_resize", broken)
    with pytest.raises(RejectedImage, match="IndexError: corrupt Huffman table") as info:
        images.convert_image(jpeg_bytes(smooth_image(40, 30)), ImageSettings())
    assert info.value.reason == "unreadable"


@pytest.mark.parametrize("shorter,target,scale", [(375, 256, 1), (511, 256, 1), (512, 256, 2),
                                                  (1500, 256, 4), (1500, 512, 2),
                                                  (5000, 256, 8)])
def test_dct_scale_is_the_largest_power_of_two_keeping_the_target(shorter, target, scale):
    assert images.dct_scale(shorter, target) == scale


def test_turbo_decodes_at_power_of_two_scales_only():
    settings = ImageSettings()  # turbo, TURBO_FACTOR x 256
    assert images.TURBO_FACTOR == 1
    for (w, h), expected in (((2000, 1500), (500, 375)), ((1100, 1030), (275, 258)),
                             ((500, 375), (500, 375)), ((4000, 600), (2000, 300))):
        pixels = images.decode_turbo(jpeg_bytes(smooth_image(w, h)), settings)
        assert pixels.shape == (*expected[::-1], 3), (w, h)
    off = images.decode_turbo(jpeg_bytes(smooth_image(2000, 1500)), ImageSettings(draft=False))
    assert off.shape == (1500, 2000, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a - b) ** 2)))


def test_turbo_output_matches_a_full_resolution_lanczos_reference():
    img = smooth_image(2400, 1800)
    data = jpeg_bytes(img)
    full = Image.open(io.BytesIO(data)).convert("RGB")  # full-size decode, independent resize
    ref = np.asarray(full.crop((300, 0, 2100, 1800)).resize((256, 256), Image.LANCZOS), float)
    for decoder in images.DECODERS:
        out = images.convert_image(data, ImageSettings(decoder=decoder))
        decoded = np.asarray(Image.open(io.BytesIO(out)), np.float64)
        assert decoded.shape == (256, 256, 3) and psnr(decoded, ref) > 38, decoder
        assert "progressive" not in Image.open(io.BytesIO(out)).info


def test_turbo_hands_cmyk_and_corrupt_jpegs_to_pillow():
    settings = ImageSettings()
    assert images.decode_turbo(jpeg_bytes(smooth_image(300, 200).convert("CMYK")),
                               settings) is None
    whole = jpeg_bytes(smooth_image(300, 200))
    assert images.decode_turbo(whole[: len(whole) // 2], settings) is None
    with pytest.raises(RejectedImage) as info:
        images.convert_image(whole[: len(whole) // 2], settings)
    assert info.value.reason == "truncated"
    assert images.decode_turbo(b"\x89PNG\r\n", settings) is None


def test_turbo_checks_the_pixel_limit_from_the_header():
    with pytest.raises(RejectedImage, match="600x500 = 300000 pixels > limit 299999"):
        images.decode_turbo(jpeg_bytes(smooth_image(600, 500)), ImageSettings(max_pixels=299_999))


@pytest.mark.parametrize("width, height, size", [
    (500, 375, 256), (375, 500, 256), (500, 333, 256), (374, 501, 256), (376, 375, 256),
    (640, 480, 256), (1000, 750, 256), (300, 301, 224), (257, 300, 256)])
def test_vips_resize_samples_pillows_grid(width, height, size):
    """Odd margins put Pillow's box on half pixels; libvips must land on the same grid (a
    half-pixel shift would cost many dB)."""
    from alexnet_dali.tools.lanczos import center_square_vips

    rng = np.random.default_rng([width, height])
    pixels = np.asarray(smooth_image(width, height)) + rng.integers(0, 40, (height, width, 3))
    pixels = pixels.clip(0, 255).astype(np.uint8)
    ref = np.asarray(images.center_square_resize(Image.fromarray(pixels), size), np.float64)
    out = center_square_vips(pixels, size)
    assert out.shape == (size, size, 3) and psnr(out.astype(np.float64), ref) > 48
    assert np.abs(out - ref).max() <= 6


def test_a_kept_vips_pipeline_gives_what_a_new_one_gives(monkeypatch):
    """Pipelines are kept per geometry and re-run on new pixels: the bytes must not depend on
    what ran before (other images, other sizes, evictions)."""
    from alexnet_dali.tools import lanczos

    monkeypatch.setattr(lanczos, "KEEP_PIPELINES", 2)
    kept = type(lanczos.PIPELINES)()
    rng = np.random.default_rng(1)
    for width, height in [(500, 375), (375, 500), (500, 375), (376, 375), (500, 333)] * 2:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        monkeypatch.setattr(lanczos, "PIPELINES", kept)  # with the history of the others
        again = lanczos.center_square_vips(pixels, 256)
        monkeypatch.setattr(lanczos, "PIPELINES", type(kept)())
        np.testing.assert_array_equal(again, lanczos.center_square_vips(pixels, 256))
    assert len(kept) == 2


def test_vips_leaves_upscaling_and_unplaceable_grids_to_pillow():
    from alexnet_dali.tools.lanczos import center_square_vips

    for width, height in ((200, 300), (257, 256)):  # 257 - 256 = 1: half a pixel at scale 1
        pixels = np.asarray(smooth_image(width, height))
        assert center_square_vips(pixels, 256) is None
        out = images.convert_image(jpeg_bytes(Image.fromarray(pixels)), ImageSettings())
        assert Image.open(io.BytesIO(out)).size == (256, 256)


def test_settings_record_the_decoder():
    from alexnet_dali.tools.preprocess import PreprocessConfig

    turbo = PreprocessConfig().settings()
    assert turbo["decoder"] == "turbo" and "simplejpeg" in turbo["libraries"]
    assert turbo["scale_factor"] == images.TURBO_FACTOR
    assert turbo["resizer"] == "vips" and "libvips" in turbo["libraries"]
    pillow = PreprocessConfig(image=ImageSettings(decoder="pillow", resizer="pillow")).settings()
    assert pillow["decoder"] == "pillow" and pillow["scale_factor"] == images.DRAFT_FACTOR
    assert pillow["resizer"] == "pillow" and "libvips" not in pillow["libraries"]
