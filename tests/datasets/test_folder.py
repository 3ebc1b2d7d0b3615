"""Reading a folder of pictures as a dataset (xpcnn/datasets/folder.py): both layouts, any
format and mode, the channels decision, the seeded split, the cache, and hostile folders,
each refused in one line or skipped."""

from __future__ import annotations

import io
import os
import time
import zipfile

import numpy as np
import pytest

from xpcnn.datasets import folder as folder_module
from xpcnn.datasets.folder import FolderError, available_memory, load_folder, stratified_split

from .test_images import png_claiming

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test caches into its own folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def picture(path, seed=0, size=(6, 5), grey=False, mode=None, fmt=None):
    """A random picture at `path`, RGB (or grey), optionally converted to `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0]) if grey else (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path, fmt)
    return path


def dataset(root, counts=(5, 5), grey=False, prefix=""):
    """Class folders a, b, ... under root/prefix with counts[i] PNGs each."""
    for label, count in enumerate(counts):
        for index in range(count):
            picture(root / prefix / "abcdefgh"[label] / f"{index}.png", seed=100 * label + index, grey=grey)
    return root


def load(root, **options):
    options = {"image_size": 4, "progress": False, "log": lambda message: None, **options}
    return load_folder(root, **options)


def test_a_folder_of_class_folders_is_split_per_class_seeded(tmp_path):
    root = dataset(tmp_path / "pictures", counts=(10, 10, 3))
    (root / "a" / ".DS_Store").write_text("hidden: ignored")
    (root / ".git").mkdir()
    data = load(root, cache=False, image_size=np.int64(4))
    assert data.classes == ("a", "b", "c") and not data.from_cache and data.files_skipped == []
    assert data.train_images.shape == (18, 3, 4, 4) and data.train_images.dtype == np.uint8
    assert data.train_labels.dtype == np.int64 and np.bincount(data.test_labels).tolist() == [2, 2, 1]
    assert data.source == (f"folder {root}: 23 pictures of 3 classes, 4x4 RGB "
                           "(18 train, 5 test: test_split 0.2, seed 0)")
    again, other = load(root, cache=False), load(root, cache=False, seed=1)
    np.testing.assert_array_equal(again.test_images, data.test_images)
    assert again.digest == data.digest and other.digest != data.digest
    assert len(data.digest) == 64 and int(data.digest, 16) >= 0


def test_the_stratified_split():
    labels = np.array([0] * 10 + [1] * 2 + [2] + [3] * 7)
    train, test = stratified_split(labels, 0.2, 3)
    assert np.bincount(labels[test], minlength=4).tolist() == [2, 1, 0, 1]  # round(1.4) = 1; one picture: train
    assert sorted([*train, *test]) == list(range(len(labels))) and list(test) == sorted(test)
    more = np.concatenate([labels, [3] * 5])  # another class grows: the others keep their split
    _, grown = stratified_split(more, 0.2, 3)
    assert set(test[labels[test] < 3]) == set(grown[more[grown] < 3])
    np.testing.assert_array_equal(stratified_split(labels, 0.2, 3)[1], test)


def test_train_and_test_folders_are_used_as_given(tmp_path):
    root = dataset(dataset(tmp_path, counts=(3, 2), prefix="train"), counts=(1, 2), prefix="test")
    data = load(root, cache=False)
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1] and data.test_labels.tolist() == [0, 1, 1]
    assert "(5 train, 3 test: train/ and test/ as given)" in data.source
    picture(root / "test" / "z" / "0.png")
    with pytest.raises(FolderError, match=r"the same class folders; only in train/: -; only in test/: z$"):
        load(root)


def test_formats_modes_and_sizes(tmp_path):
    root = tmp_path / "pictures"
    for name, mode, fmt in [("l.png", "L", None), ("la.png", "LA", None), ("p.gif", "P", None),
                            ("rgb.jpg", "RGB", None), ("rgba.webp", "RGBA", None), ("cmyk.tiff", "CMYK", None),
                            ("rgb.BMP", "RGB", "BMP"), ("one.tif", "1", None), ("rgb.jfif", "RGB", "JPEG"),
                            ("rgb.jpe", "RGB", "JPEG")]:
        picture(root / "a" / name, size=(7, 3), mode=mode, fmt=fmt)
    (root / "b").mkdir()
    Image.fromarray(np.full((9, 4), 65535, np.uint16)).save(root / "b" / "deep.png")  # I;16
    palette = Image.new("P", (5, 5))
    palette.putpalette([0, 0, 0] * 256)
    palette.save(root / "b" / "clear.png", transparency=0)  # every pixel transparent
    data = load(root, cache=False, test_split=0.5)
    images = np.concatenate([data.train_images, data.test_images])
    assert images.shape == (12, 3, 4, 4) and np.count_nonzero(images == 255) >= 2 * 3 * 16
    assert (data.test_labels == 1).sum() == 1 and (data.train_images[data.train_labels == 1] == 255).all()


def test_channels_one_when_every_picture_is_grey(tmp_path):
    root = dataset(tmp_path, grey=True)
    assert load(root, cache=False).train_images.shape[1] == 1
    picture(root / "a" / "colour.png", seed=9)
    assert load(root, cache=False).train_images.shape[1] == 3
    assert load(root, cache=False, channels=1).train_images.shape[1] == 1


def test_pictures_of_digits_are_read_in_mnist_s_form(tmp_path):
    """As predict reads a digit (images.read_image): dark ink on paper made light ink on
    black, centred by mass; cached apart from the same folder read as photos."""
    from PIL import Image

    from xpcnn.datasets.images import read_image

    for label in "ab":
        for index in range(3):
            paper = np.full((30, 24), 230, np.uint8)
            paper[5 + index:20 + index, 8:12 if label == "a" else 16] = 20  # a stroke: dark ink
            (tmp_path / "digits" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(paper).save(tmp_path / "digits" / label / f"{index}.png")
    data = load(tmp_path / "digits", image_size=28, pictures="digits", test_split=0.34)
    images = np.concatenate([data.train_images, data.test_images])
    assert images.shape == (6, 1, 28, 28) and images[:, 0, 0, 0].max() == 0 and images.max() > 200
    expected = {read_image(path, None, (28, 28)).tobytes() for path in sorted((tmp_path / "digits").rglob("*.png"))}
    assert {image[0].tobytes() for image in images} == expected
    assert "6 pictures of 2 classes, 28x28 grey digits (" in data.source  # that --digits took, where it is said
    photos = load(tmp_path / "digits", image_size=28, test_split=0.34)
    assert not photos.from_cache and photos.train_images[:, 0, 0, 0].min() > 200  # light paper, as it is
    assert "28x28 grey (" in photos.source


def test_the_threads_change_nothing(tmp_path, monkeypatch):
    root = dataset(tmp_path, counts=(40, 30))
    monkeypatch.setattr(folder_module, "CHUNK", 3)
    many = load(root, cache=False)
    monkeypatch.setattr(folder_module, "MAX_THREADS", 1)
    assert load(root, cache=False).digest == many.digest


def test_the_cache_is_hit_missed_on_change_and_rebuilt_when_damaged(tmp_path):
    root, notes = dataset(tmp_path / "pictures"), []
    first = load(root, log=notes.append)
    second = load(root, log=notes.append)
    assert second.from_cache and second.digest == first.digest and second.source == first.source
    np.testing.assert_array_equal(second.train_images, first.train_images)
    os.utime(root / "a" / "0.png", ns=(1, 1))
    assert not load(root).from_cache and load(root).from_cache
    picture(root / "b" / "new.png")
    assert not load(root).from_cache
    [entry] = (tmp_path / "cache" / "xpcnn" / "folders").iterdir()
    entry.write_bytes(entry.read_bytes()[:500])
    rebuilt = load(root, log=notes.append)
    assert not rebuilt.from_cache and load(root).from_cache
    assert notes == [f"the cache entry {entry} is damaged (BadZipFile: File is not a zip file); decoding the "
                     "folder again"]
    assert not load(root, cache=False).from_cache and load(root, image_size=5).train_images.shape[-1] == 5


def test_a_cached_entry_must_match_its_digest(tmp_path):
    root, notes = dataset(tmp_path / "pictures"), []
    load(root)
    [entry] = (tmp_path / "cache" / "xpcnn" / "folders").iterdir()
    with np.load(entry) as archive:
        arrays = dict(archive)
    arrays["train_images"][0, 0, 0, 0] ^= 1
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    entry.write_bytes(buffer.getvalue())
    assert not load(root, log=notes.append).from_cache
    assert "do not match their digest" in notes[0]


def test_a_cached_member_asking_for_more_than_the_file_is_refused_unread(tmp_path):
    root, notes = dataset(tmp_path / "pictures"), []
    load(root)
    [entry] = (tmp_path / "cache" / "xpcnn" / "folders").iterdir()
    with zipfile.ZipFile(entry) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["train_images.npy"] = members["train_images.npy"].replace(b"(8, 3, 4, 4)", b"(8000000000, 3, 4, 4)")
    with zipfile.ZipFile(entry, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    assert not load(root, log=notes.append).from_cache
    assert "train_images: uint8 of shape (8000000000, 3, 4, 4)" in notes[0]


def bad_folder(tmp_path, what):
    """A two-class folder with one hostile entry in class a; returns (root, its path)."""
    root = dataset(tmp_path / "pictures", counts=(3, 3))
    path = root / "a" / {"corrupt": "corrupt.png", "truncated": "cut.jpg", "text": "text.png", "stray": "README.txt",
                         "bomb": "bomb.png", "loop": "loop", "fifo": "pipe.png", "empty": "empty.jpg"}[what]
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good, "JPEG")
    if what == "corrupt":
        data = bytearray(picture(tmp_path / "x.png", size=(16, 16)).read_bytes())
        data[60:80] = bytes(20)
        path.write_bytes(bytes(data))
    elif what == "truncated":
        path.write_bytes(good.getvalue()[:len(good.getvalue()) // 2])
    elif what in ("text", "stray"):
        path.write_text("not a picture\n")
    elif what == "bomb":
        path.write_bytes(png_claiming(60_000, 60_000))
    elif what == "loop":
        os.symlink("..", path)  # back to class a: a folder reached twice
    elif what == "empty":
        path.write_bytes(b"")
    else:
        os.mkfifo(path)
    return root, path


REASONS = {"corrupt": "not a readable picture", "truncated": "not a readable picture: OSError: image file is truncated",
           "text": "not a picture in a format Pillow reads", "stray": "not a picture: expected .bmp, .gif",
           "bomb": "over the limit of 25,000,000 pixels", "loop": "a folder reached twice",
           "fifo": "not a regular file", "empty": "an empty file (0 bytes)"}


@pytest.mark.parametrize("what", sorted(REASONS))
def test_a_bad_entry_is_refused_in_one_line_or_skipped(tmp_path, what):
    root, path = bad_folder(tmp_path, what)
    start = time.process_time()  # CPU time: the check's cost, however loaded the machine
    with pytest.raises(FolderError) as refused:
        load(root)
    message = str(refused.value)
    assert message.startswith(f"{path}: {REASONS[what]}")
    assert message.endswith("(on_bad='skip', the command's --skip-bad-images, skips such files)")
    assert "\n" not in message
    notes = []
    data = load(root, on_bad="skip", log=notes.append)
    assert [name for name, _ in data.files_skipped] == [str(path)]
    assert len(data.train_labels) + len(data.test_labels) == 6
    assert notes == [f"{root}: skipped 1 file(s) that are not usable pictures: "
                     f"{path.relative_to(root)} ({data.files_skipped[0][1]})"]
    assert data.source.endswith(", 1 file(s) skipped")
    cached = load(root, on_bad="skip", log=notes.append)
    assert cached.from_cache and cached.files_skipped == data.files_skipped and notes[1] == notes[0]
    assert time.process_time() - start < 5


def test_a_folder_that_is_not_a_dataset_is_refused_in_one_line(tmp_path):
    with pytest.raises(FolderError, match=r"missing: does not exist; expected a folder of class folders"):
        load(tmp_path / "missing")
    with pytest.raises(FolderError, match=r"file.png: is not a folder"):
        load(picture(tmp_path / "file.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FolderError, match=r"empty: 0 class folder\(s\) \(none\); a dataset needs at least 2"):
        load(tmp_path / "empty")
    with pytest.raises(FolderError, match=r"one: 1 class folder\(s\) \(a\); a dataset needs at least 2"):
        load(dataset(tmp_path / "one", counts=(3,)))
    root = dataset(tmp_path / "two")
    (root / "c" / ".hidden").mkdir(parents=True)
    picture(root / "c" / ".hidden" / "x.png")
    with pytest.raises(FolderError, match=rf"^{root / 'c'}: a class folder without pictures; every class needs"):
        load(root)
    (root / "c" / "notes.txt").write_text("x")
    with pytest.raises(FolderError, match=r"c: a class folder without pictures \(1 file\(s\) skipped\)"):
        load(root, on_bad="skip")


def test_a_dataset_over_the_memory_limit_is_refused_before_decoding(tmp_path):
    root = dataset(tmp_path / "pictures", counts=(5, 5))
    with pytest.raises(FolderError, match=r"10 pictures of 3x4x4 need 480 bytes, over the limit of 200 \(max_bytes\); "
                                          r"a smaller image_size needs less: image_size=2 would fit"):
        load(root, max_bytes=200)
    assert load(root, max_bytes=480).train_images.nbytes + load(root, max_bytes=480).test_images.nbytes == 480
    assert available_memory() is None or available_memory() > 0


@pytest.mark.parametrize("options, message", [
    ({"test_split": 0}, r"test_split must be a fraction in \(0, 1\] \(evaluating needs a test set; 1: every picture"),
    ({"test_split": 1.5}, r"test_split must be a fraction in \(0, 1\]"),
    ({"channels": 2}, r"channels must be 1, 3 or None, got 2"),
    ({"image_size": 0}, r"image_size must be an integer in \[1, 4096\], got 0"),
    ({"image_size": 4097}, r"image_size must be an integer in \[1, 4096\], got 4097"),
    ({"on_bad": "ignore"}, r"on_bad must be 'refuse' or 'skip', got 'ignore'"),
    ({"seed": -1}, r"seed must be an integer >= 0"),
    ({"max_bytes": 0}, r"max_bytes must be an integer >= 1 or None"),
    ({"pictures": "photos"}, r"pictures must be one of 'resize', 'digits', got 'photos'"),
    ({"pictures": "digits", "channels": 3}, r"pictures of digits are grey: channels must be 1 or None, got 3"),
])
def test_wrong_arguments_are_refused_in_one_line(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        load(tmp_path, **options)


def test_every_picture_of_one_class_alone_leaves_no_test_set(tmp_path):
    with pytest.raises(FolderError, match=r"every class holds one picture; a test set needs classes of at least 2"):
        load(dataset(tmp_path, counts=(1, 1)))


def test_without_tqdm_progress_is_a_line_every_few_seconds(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(folder_module, "PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(folder_module, "CHUNK", 5)
    notes = []
    load(dataset(tmp_path, counts=(5, 5)), cache=False, progress=True, log=notes.append)
    assert notes[-1] == "decoding pictures: 10 of 10" and len(notes) == 2


def test_a_broken_link_is_a_bad_entry(tmp_path):
    root = dataset(tmp_path / "pictures")
    os.symlink("nowhere.png", root / "b" / "gone.png")
    os.symlink("self.png", root / "b" / "self.png")
    with pytest.raises(FolderError, match=r"b/gone.png: a broken link \(No such file or directory\) \(on_bad="):
        load(root)
    data = load(root, on_bad="skip")
    assert [reason for _, reason in data.files_skipped] == ["a broken link (No such file or directory)",
                                                            "a broken link (Too many levels of symbolic links)"]


def test_half_of_the_split_layout_is_refused_never_taken_for_a_class(tmp_path):
    for name in ("a", "b", "test"):
        (tmp_path / "root" / name).mkdir(parents=True)
    with pytest.raises(FolderError, match=r"holds test/ but no train/: give both"):
        load_folder(tmp_path / "root", 8, cache=False, progress=False)


@pytest.mark.parametrize("names", [("Train", "Test"), ("training", "testing"), ("a", "b", "Val")])
def test_folders_named_like_splits_are_refused_never_taken_for_classes(tmp_path, names):
    for name in names:
        dataset(tmp_path / "root", counts=(2, 2), prefix=name)
    with pytest.raises(FolderError, match=rf"^{tmp_path / 'root' / names[-1]}: named like a split of the data"):
        load(tmp_path / "root")


def test_a_skipped_file_with_a_line_break_in_its_name_is_named_on_one_line(tmp_path):
    root = dataset(tmp_path / "root", counts=(2, 2))
    (root / "a" / "notes\nfine.png").write_text("not a picture")
    notes = []
    load(root, on_bad="skip", log=notes.append)
    assert notes == [f"{root}: skipped 1 file(s) that are not usable pictures: a/notes\\nfine.png (not a picture in "
                     "a format Pillow reads)"]


def test_the_files_windows_and_macos_make_are_left_out(tmp_path):
    root = dataset(tmp_path / "root", counts=(2, 2))
    for name in ("a/Thumbs.db", "a/desktop.ini", "b/Icon\r", "b/.DS_Store", "b/._0.png"):
        (root / name).write_bytes(b"\0\1 not a picture")
    picture(root / "__MACOSX" / "a" / "._0.png")
    data = load(root)
    assert data.classes == ("a", "b") and len(data.train_labels) + len(data.test_labels) == 4 and not data.files_skipped


def test_a_split_of_one_scores_every_picture(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "root" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "root" / name / "only.png")
    data = load_folder(tmp_path / "root", 4, test_split=1.0, cache=False, progress=False)
    assert len(data.test_labels) == 2 and len(data.train_labels) == 0


def test_a_class_folder_whose_name_is_not_printable_is_refused(tmp_path):
    dataset(tmp_path / "pics")
    os.rename(tmp_path / "pics" / "a", tmp_path / "pics" / "a\x1b[31m\nfake line")
    with pytest.raises(FolderError, match=r"a class folder's name is its class's name, which is printed: it must be "
                                          r"printable"):
        load(tmp_path / "pics")


def test_a_class_folder_whose_name_is_no_utf8_is_refused(tmp_path):
    """Its name, a lone surrogate in Python, could be neither drawn in the run's plots (which
    failed after training) nor printed."""
    dataset(tmp_path / "pics")
    os.rename(tmp_path / "pics" / "a", os.fsencode(tmp_path / "pics") + b"/caf\xe9")
    with pytest.raises(FolderError, match=r"caf\\udce9'?: a class folder's name is its class's name"):
        load(tmp_path / "pics")
