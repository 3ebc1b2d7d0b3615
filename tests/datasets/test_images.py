"""Reading images (xpcnn/datasets/images.py) from untrusted files: mutated .npy files and
decompression bombs are refused from the header; photos of any format and mode are fitted
into a square, with their EXIF orientation, transparency on white and Pillow's grey.

Predictions from .npy and picture files, end to end, are tested in tests/cli/test_main.py.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xpcnn.datasets.images import ImageError, read_image

from ..helpers import mutate


@settings(max_examples=150)
@given(st.randoms(use_true_random=False), st.integers(1, 6))
def test_npy_image_mutations(tmp_path_factory, rng, edits):
    folder = tmp_path_factory.mktemp("npy")
    buffer = io.BytesIO()
    np.save(buffer, np.arange(784, dtype=np.uint8).reshape(28, 28))
    (folder / "m.npy").write_bytes(mutate(buffer.getvalue(), rng, edits))
    try:
        pixels = read_image(folder / "m.npy")
    except ImageError:
        return
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims width x height (CRC fixed), data for 1x1."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def test_decompression_bomb_images_are_refused_from_the_header(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    start = time.process_time()  # CPU time: the check's cost, however loaded the machine
    with pytest.raises(ImageError, match="over the limit"):
        read_image(tmp_path / "bomb.png")
    assert time.process_time() - start < 2
    (tmp_path / "cut.png").write_bytes(png_claiming(28, 28)[:40])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }"
    (tmp_path / "lying.npy").write_bytes(header.ljust(128, b" ") + b"\n")
    with pytest.raises(ImageError, match=r"shape \(28, 28\)"):
        read_image(tmp_path / "lying.npy")


def test_only_regular_files_are_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    start = time.process_time()
    with pytest.raises(ImageError, match="pipe.png: not a regular file"):
        read_image(fifo)  # opening it would wait for a writer forever
    with pytest.raises(ImageError, match="a folder, not an image"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="missing.png: cannot read: No such file"):
        read_image(tmp_path / "missing.png")
    assert time.process_time() - start < 5


def test_transparency_and_16_bit_pictures(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = digit  # black ink, drawn only by its alpha
    image_module.fromarray(rgba, "RGBA").save(tmp_path / "ink.png")
    image_module.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    reference = read_image(tmp_path / "deep.png")
    assert reference.max() == 255 and reference[0].max() == 0  # light ink on black, like MNIST
    np.testing.assert_array_equal(read_image(tmp_path / "ink.png"), reference)
    image_module.fromarray(digit.astype(np.uint16)).save(tmp_path / "low.png")  # 16 bits holding 0-255 levels
    np.testing.assert_array_equal(read_image(tmp_path / "low.png"), reference)
    for name, scale in (("unit.tiff", 1 / 255), ("levels.tiff", 1.0)):  # float grey in [0, 1] or in [0, 255]
        image_module.fromarray(digit.astype(np.float32) * np.float32(scale), "F").save(tmp_path / name)
        np.testing.assert_array_equal(read_image(tmp_path / name), reference, err_msg=name)


def test_a_picture_inverted_into_nothing_says_what_was_inverted(tmp_path):
    image = pytest.importorskip("PIL.Image")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a light stroke on black, as MNIST's
    image.fromarray(digit).save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.png").max() > 0
    with pytest.raises(ImageError, match=r"no digit found.*\(inverted as --invert asked: is it dark ink on light"):
        read_image(tmp_path / "one.png", invert=True)


def test_inverting_is_for_digits_in_a_picture_or_an_array(tmp_path):
    from xpcnn.datasets.images import read_for_model

    np.save(tmp_path / "grey.npy", np.full((28, 28), 200, np.uint8))
    np.save(tmp_path / "red.npy", np.zeros((3, 8, 8), np.uint8))
    assert read_for_model(tmp_path / "grey.npy", (1, 28, 28), "digits", invert=True).max() == 55
    for invert in (True, False):
        with pytest.raises(ImageError, match="red.npy: inverting is for pictures of digits; this model was trained on"):
            read_for_model(tmp_path / "red.npy", (3, 8, 8), "resize", invert=invert)
    assert read_for_model(tmp_path / "red.npy", (3, 8, 8), "resize").shape == (3, 8, 8)


# -- photos (read_photo, read_photo_rgb, photo_channels) ----------------------------------

def save(path, pixels, mode=None, **options):
    from PIL import Image

    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path, **options)
    return path


def test_a_photo_keeps_its_aspect_and_its_middle(tmp_path):
    pytest.importorskip("PIL")
    from xpcnn.datasets.images import read_photo

    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = (200, 40, 10)  # the middle third, between black thirds
    photo = read_photo(save(tmp_path / "wide.png", wide), 5)
    assert photo.shape == (3, 5, 5) and photo.dtype == np.uint8
    np.testing.assert_array_equal(photo[:, 2, 2], [200, 40, 10])
    assert (photo[:, :, 1:4] == photo[:, :1, 2:3]).all()  # the middle square is all colour
    assert read_photo(tmp_path / "wide.png", 5, channels=1).shape == (1, 5, 5)


def test_grey_is_pillows_luma_and_a_grey_photo_equals_its_rgb_copy(tmp_path):
    from PIL import Image

    from xpcnn.datasets.images import photo_channels, read_photo

    rgb = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    pillow_grey = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(photo_channels(rgb.transpose(2, 0, 1), 1)[0], pillow_grey)
    save(tmp_path / "grey.png", pillow_grey)
    save(tmp_path / "grey-rgb.png", pillow_grey, "RGB")
    grey, copy = read_photo(tmp_path / "grey.png", 7), read_photo(tmp_path / "grey-rgb.png", 7)
    assert grey.shape == (1, 7, 7) and copy.shape == (1, 7, 7)
    np.testing.assert_array_equal(grey, copy)
    np.testing.assert_array_equal(read_photo(tmp_path / "grey.png", 7, channels=3), np.repeat(grey, 3, axis=0))
    with pytest.raises(ValueError, match="channels must be 1, 3 or None, got 2"):
        read_photo(tmp_path / "grey.png", 7, channels=2)


@pytest.mark.parametrize("mode, suffix", [("RGBA", ".png"), ("LA", ".png"), ("P", ".png"), ("RGBA", ".webp")])
def test_transparency_is_laid_on_white(tmp_path, mode, suffix):
    pytest.importorskip("PIL")
    from xpcnn.datasets.images import read_photo

    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[:4, :, 3] = 255  # the top half opaque black, the bottom half transparent
    options = {"transparency": 0} if mode == "P" else {"lossless": True} if suffix == ".webp" else {}
    if mode == "P":
        pixels = np.where(pixels[..., 3] > 0, 1, 0).astype(np.uint8)  # palette 0: transparent, 1: black
    path = tmp_path / f"clear{suffix}"
    if mode == "P":
        from PIL import Image

        image = Image.fromarray(pixels, "P")
        image.putpalette([255, 0, 0, 0, 0, 0] + [0, 0, 0] * 254)
        image.save(path, **options)
    else:
        save(path, pixels, mode, **options)
    photo = read_photo(path, 8, channels=3)
    assert (photo[:, :3] == 0).all() and (photo[:, 5:] == 255).all()


def test_deep_and_other_modes(tmp_path):
    pytest.importorskip("PIL")
    from xpcnn.datasets.images import read_photo_rgb

    deep = np.array([[0, 257 * 100], [65535, 257]], np.uint16)
    rgb, colour = read_photo_rgb(save(tmp_path / "deep.png", deep), 2)  # I;16
    assert rgb[0].tolist() == [[0, 100], [255, 1]] and not colour
    colours = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    for name, mode in [("cmyk.tiff", "CMYK"), ("cmyk.jpg", "CMYK"), ("ycbcr.tiff", "YCbCr"), ("bits.png", "1"),
                       ("float.tiff", "F"), ("int.tiff", "I")]:
        rgb, colour = read_photo_rgb(save(tmp_path / name, colours, mode), 4)
        assert rgb.shape == (3, 4, 4) and colour == (mode in ("CMYK", "YCbCr")), name


D50 = (0.9642, 1.0, 0.8249)  # the ICC's white
DISPLAY_P3 = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))  # colorants, D50
SRGB = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def matrix_profile(description, colorants, gamma=2.2):
    """An ICC v2 display profile of three colorants (XYZ, D50) and one gamma curve, as a
    phone's Display P3 photo embeds (here with a plain gamma for its curve)."""
    def xyz(values):
        return b"XYZ " + bytes(4) + fixed(*values)

    curve = gamma_curve(gamma)
    tags = [*[(name + b"XYZ", xyz(values)) for name, values in zip((b"r", b"g", b"b"), colorants)],
            *[(name + b"TRC", curve) for name in (b"r", b"g", b"b")]]
    return icc_profile(b"RGB ", description, tags)


def grey_profile(description, gamma):
    """An ICC v2 grey display profile of one gamma curve, as grey scans embed."""
    return icc_profile(b"GRAY", description, [(b"kTRC", gamma_curve(gamma))])


def gamma_curve(gamma):
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))


def fixed(*values):
    return b"".join(struct.pack(">i", round(value * 65536)) for value in values)


def icc_profile(space, description, tags):
    """The bytes of an ICC v2 display profile of colour `space` with its description, the D50
    white point and `tags` (name, body) besides."""
    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + fixed(*D50)), (b"cprt", b"text" + bytes(4) + b"none\0"),
            *tags]
    start, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for name, body in tags:
        table += name + struct.pack(">II", start + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    header = (struct.pack(">I", start + len(data)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntr" + space
              + b"XYZ " + bytes(12) + b"acsp" + bytes(28) + fixed(*D50) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


@pytest.mark.parametrize("name, mode", [("p3.png", "RGB"), ("p3.jpg", "RGB"), ("p3a.png", "RGBA")])
def test_a_colour_profile_is_converted_to_srgb(tmp_path, name, mode):
    pytest.importorskip("PIL")
    from PIL import features

    from xpcnn.datasets.images import read_photo_rgb

    if not features.check("littlecms2"):
        pytest.skip("Pillow without littlecms")
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :4], pixels[:, 4:] = (180, 90, 40), (128, 128, 128)  # an orange, a grey
    options = {"quality": 100, "subsampling": 0} if name.endswith(".jpg") else {}
    plain, _ = read_photo_rgb(save(tmp_path / f"plain-{name}", pixels, mode, **options), 4)
    p3, _ = read_photo_rgb(save(tmp_path / name, pixels, mode, icc_profile=matrix_profile("Display P3",
                                                                                          DISPLAY_P3), **options), 4)
    orange, grey = p3[:, 1, 1].astype(int), p3[:, 1, 3].astype(int)
    assert orange[0] > plain[0, 1, 1] + 5 and orange[2] < plain[2, 1, 1] - 5, (orange, plain[:, 1, 1])  # more vivid
    assert np.abs(grey - plain[:, 1, 3]).max() <= 2, (grey, plain[:, 1, 3])  # the same white: greys stay grey


def test_an_srgb_profile_or_one_littlecms_cannot_read_changes_nothing(tmp_path):
    pytest.importorskip("PIL")
    from xpcnn.datasets.images import read_photo_rgb

    pixels = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    plain, _ = read_photo_rgb(save(tmp_path / "plain.png", pixels), 6)
    for name, profile in [("srgb.png", matrix_profile("sRGB IEC61966-2.1", SRGB)), ("broken.png", b"\0" * 300),
                          ("cut.png", matrix_profile("Display P3", DISPLAY_P3)[:200])]:
        np.testing.assert_array_equal(read_photo_rgb(save(tmp_path / name, pixels, icc_profile=profile), 6)[0], plain,
                                      err_msg=name)
    cmyk, _ = read_photo_rgb(save(tmp_path / "cmyk.tiff", pixels, "CMYK"), 6)
    rgb_profile = matrix_profile("Display P3", DISPLAY_P3)  # a profile of another colour space than the picture's
    np.testing.assert_array_equal(read_photo_rgb(save(tmp_path / "p3.tiff", pixels, "CMYK", icc_profile=rgb_profile),
                                                 6)[0], cmyk)


def test_a_palette_or_grey_picture_s_profile_is_converted_too(tmp_path):
    """They were taken as sRGB whatever profile they embed."""
    pytest.importorskip("PIL")
    from PIL import Image, features

    from xpcnn.datasets.images import read_photo_rgb

    if not features.check("littlecms2"):
        pytest.skip("Pillow without littlecms")
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :4], pixels[:, 4:] = (180, 90, 40), (20, 160, 220)
    p3 = matrix_profile("Display P3", DISPLAY_P3)
    palette = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    palette.save(tmp_path / "p3-palette.png", icc_profile=p3)
    as_rgb = save(tmp_path / "p3.png", np.asarray(palette.convert("RGB")), icc_profile=p3)
    np.testing.assert_array_equal(read_photo_rgb(tmp_path / "p3-palette.png", 4)[0], read_photo_rgb(as_rgb, 4)[0])
    grey = np.full((4, 4), 128, np.uint8)
    linear, colour = read_photo_rgb(save(tmp_path / "linear.png", grey, icc_profile=grey_profile("Linear", 1.0)), 4)
    assert not colour and np.all(np.abs(linear.astype(int) - 188) <= 2), linear[:, 0, 0]  # sRGB of linear 0.5
    np.testing.assert_array_equal(read_photo_rgb(save(tmp_path / "rgb-profile.png", grey, icc_profile=p3), 4)[0],
                                  read_photo_rgb(save(tmp_path / "plain.png", grey), 4)[0])  # another colour space


def test_the_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    from xpcnn.datasets.images import read_photo

    stored = np.zeros((16, 32), np.uint8)
    stored[:, 16:] = 255  # stored: black left, white right; shown turned 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path / "turned.jpg", stored, exif=exif.tobytes(), quality=95)
    shown = read_photo(path, 8)[0].astype(int)
    assert shown[:3].max() < 40 and shown[5:].min() > 215  # black on top, white below
    assert read_photo(save(tmp_path / "plain.jpg", stored, quality=95), 8)[0][:, :3].max() < 40


def test_a_digit_photo_is_turned_upright_too(tmp_path):
    """A phone stores a picture of a digit sideways with an EXIF orientation."""
    from PIL import Image

    upright = np.full((40, 40), 255, np.uint8)
    upright[6:34, 18:22] = 0  # a "1": dark ink on white paper
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    turned = save(tmp_path / "turned.png", np.ascontiguousarray(np.rot90(upright)), exif=exif.tobytes())
    np.testing.assert_array_equal(read_image(turned), read_image(save(tmp_path / "upright.png", upright)))


def test_unusable_photos_are_refused_in_one_line(tmp_path):
    pytest.importorskip("PIL")
    from xpcnn.datasets.images import MAX_PIXELS, read_photo

    (tmp_path / "bomb.png").write_bytes(png_claiming(6000, 6000))  # under Pillow's limit, over ours
    (tmp_path / "huge.png").write_bytes(png_claiming(60_000, 60_000))
    (tmp_path / "text.jpg").write_text("hello\n")
    noise = save(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (tmp_path / "cut.png").write_bytes(noise.read_bytes()[:2000])
    os.mkfifo(tmp_path / "pipe.png")
    expected = {"bomb.png": f"6000x6000 pixels, over the limit of {MAX_PIXELS:,}",
                "huge.png": f"over the limit of {MAX_PIXELS:,} pixels", "text.jpg": "not a picture in a format Pillow",
                "cut.png": "not a readable picture: OSError: image file is truncated",
                "pipe.png": "not a regular file", "missing.png": "cannot read: No", ".": "not a regular file"}
    start = time.process_time()
    for name, message in expected.items():
        with pytest.raises(ImageError) as refused:
            read_photo(tmp_path / name, 8)
        assert str(refused.value).startswith(f"{tmp_path / name}: {message}") and "\n" not in str(refused.value)
    assert time.process_time() - start < 5
    with pytest.raises(ValueError, match="size must be an integer >= 1, got 0"):
        read_photo(tmp_path / "cut.png", 0)


def test_a_large_jpeg_of_a_digit_is_decoded_at_a_reduced_scale_as_a_photo_is(tmp_path):
    """Read as a digit at full size it was refused (5200x5000 is over the limit), where a
    photo was read; and an empty file is named as one, as a photo's is."""
    from PIL import Image

    from xpcnn.datasets.images import DIGIT_DRAFT

    paper = Image.new("L", (5200, 5000), 235)
    paper.paste(20, (2400, 1500, 2800, 3500))  # a "1": a dark stroke, 400 x 2000 pixels
    paper.save(tmp_path / "big.jpg", quality=90)
    digit = read_image(tmp_path / "big.jpg")
    assert digit.shape == (28, 28) and digit[:, 13:15].max() > 200 and digit[:, :8].max() < 30  # light in the middle
    small = paper.resize((5200 // 8, 5000 // 8), Image.Resampling.BOX)  # what 1/8 scale decodes, near enough
    small.save(tmp_path / "small.png")
    assert np.abs(digit.astype(int) - read_image(tmp_path / "small.png")).max() <= 40
    assert DIGIT_DRAFT * 28 <= 5000 // 8
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.png: an empty file \(0 bytes\)$"):
        read_image(tmp_path / "empty.png")


def test_photos_need_pillow(tmp_path, monkeypatch):
    import sys

    from xpcnn.datasets.images import pillow_version, read_photo

    monkeypatch.setitem(sys.modules, "PIL", None)
    for call in (pillow_version, lambda: read_photo(tmp_path / "x.png", 8)):
        with pytest.raises(ImportError, match=r"^reading pictures needs Pillow: pip install pillow \(in xpcnn's "
                                              r"clone: pip install '\.\[images\]'\)$"):
            call()
