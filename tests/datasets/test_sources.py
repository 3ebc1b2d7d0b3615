"""xpcnn/datasets/sources.py: what is known of each dataset before it is read."""

from __future__ import annotations

import os

import pytest

from xpcnn.datasets.sources import DATASETS, FOLDER_IMAGE_SIDE, IMAGE_SIDES, MNIST, PICTURES, DatasetSpec, image_side


def test_the_side_of_the_images_is_known_before_they_are_read():
    assert set(IMAGE_SIDES) == set(DATASETS)
    assert (image_side("mnist"), image_side("cifar100"), image_side("fashion-mnist", 8)) == (28, 32, 28)
    assert (image_side("images"), image_side("images", 8)) == (FOLDER_IMAGE_SIDE, 8)
    assert image_side("someone's own") is None


def test_escaped_writes_what_would_break_a_line_as_escapes():
    from xpcnn.datasets.sources import escaped

    assert escaped("cat\nxpcnn: fine\r\x1b[31m\u202e.png") == "cat\\nxpcnn: fine\\r\\x1b[31m\\u202e.png"
    assert escaped("my cats/ünï 猫.jpg") == "my cats/ünï 猫.jpg"
    assert escaped(os.fsdecode(b"caf\xe9.png")) == "caf\\udce9.png"  # a name that is no UTF-8: drawable, encodable


def test_a_spec_reads_its_pictures_in_one_of_the_known_ways():
    assert PICTURES == ("resize", "digits")  # the names runs record: a checkpoint holds them
    with pytest.raises(ValueError, match=r"^DatasetSpec pictures must be one of 'resize', 'digits', got 'photos'$"):
        DatasetSpec("mine", {}, (), MNIST.mean, MNIST.std, MNIST.classes, pictures="photos")
