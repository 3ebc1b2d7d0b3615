"""xpcnn/datasets/sources.py: what is known of each dataset before it is read."""

from __future__ import annotations

from xpcnn.datasets.sources import DATASETS, FOLDER_IMAGE_SIDE, IMAGE_SIDES, image_side


def test_the_side_of_the_images_is_known_before_they_are_read():
    assert set(IMAGE_SIDES) == set(DATASETS)
    assert (image_side("mnist"), image_side("cifar100"), image_side("fashion-mnist", 8)) == (28, 32, 28)
    assert (image_side("images"), image_side("images", 8)) == (FOLDER_IMAGE_SIDE, 8)
    assert image_side("someone's own") is None


def test_escaped_writes_what_would_break_a_line_as_escapes():
    from xpcnn.datasets.sources import escaped

    assert escaped("cat\nxpcnn: fine\r\x1b[31m\u202e.png") == "cat\\nxpcnn: fine\\r\\x1b[31m\\u202e.png"
    assert escaped("my cats/ünï 猫.jpg") == "my cats/ünï 猫.jpg"
