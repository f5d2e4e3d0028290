import numpy as np
import pytest
import torch
from PIL import Image

from flowforge.data.images import check_masks, load_image_folder


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _random_uint8(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_round_trip_flat_rgb(tmp_path):
    arrays = [_random_uint8(i, (6, 5, 3)) for i in range(3)]
    for i, a in enumerate(arrays):
        _save(tmp_path / f"img{i}.png", a)
    (tmp_path / "notes.txt").write_text("ignored")
    x, labels, classes = load_image_folder(tmp_path)
    assert x.shape == (3, 3, 6, 5) and x.dtype == torch.float32
    assert labels is None and classes == ()
    # PNG is lossless: the tensor is v / 127.5 - 1 of the saved bytes, in name order.
    expected = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(x, expected, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1


def test_round_trip_class_subfolders_and_conversion(tmp_path):
    gray = [_random_uint8(i, (4, 4)) for i in range(5)]
    for i, a in enumerate(gray[:2]):
        _save(tmp_path / "zebra" / f"{i}.png", a)
    for i, a in enumerate(gray[2:]):
        _save(tmp_path / "ant" / f"{i}.png", a)
    x, labels, classes = load_image_folder(tmp_path)
    assert classes == ("ant", "zebra")  # sorted names -> 0..K-1
    assert labels.tolist() == [0, 0, 0, 1, 1] and labels.dtype == torch.long
    expected = torch.from_numpy(np.stack(gray[2:] + gray[:2])).unsqueeze(1).float() / 127.5 - 1
    assert torch.allclose(x, expected, atol=1e-6)
    # channels=3 repeats the grey value in R, G and B.
    x3 = load_image_folder(tmp_path, channels=3).images
    assert x3.shape == (5, 3, 4, 4) and torch.allclose(x3, x.expand(5, 3, 4, 4), atol=1e-6)
    # size resizes; a constant image stays constant under bilinear resizing.
    _save(tmp_path / "ant" / "const.png", np.full((4, 4), 51, dtype=np.uint8))
    xs = load_image_folder(tmp_path, size=8).images
    assert xs.shape == (6, 1, 8, 8)  # ant/const.png sorts after ant/0..2.png: index 3
    assert torch.allclose(xs[3], torch.full_like(xs[3], 51 / 127.5 - 1))


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")


def test_no_images_lists_extensions(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.png, \.jpg, \.jpeg"):
        load_image_folder(tmp_path)


def test_mixed_sizes_names_files(tmp_path):
    _save(tmp_path / "small.png", _random_uint8(0, (4, 4)))
    _save(tmp_path / "wide.png", _random_uint8(1, (4, 7)))
    with pytest.raises(ValueError, match="small.png is 4x4.*wide.png is 7x4.*size=4"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=4).images.shape == (2, 1, 4, 4)


def test_mixed_channels_names_files(tmp_path):
    _save(tmp_path / "gray.png", _random_uint8(0, (4, 4)))
    _save(tmp_path / "rgb.png", _random_uint8(1, (4, 4, 3)))
    with pytest.raises(ValueError, match="gray.png has 1 and .*rgb.png has 3.*channels="):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, channels=1).images.shape == (2, 1, 4, 4)


def test_corrupt_file_named(tmp_path):
    _save(tmp_path / "good.png", _random_uint8(0, (4, 4)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(tmp_path)


def test_mixed_layout_names_both(tmp_path):
    _save(tmp_path / "top.png", _random_uint8(0, (4, 4)))
    _save(tmp_path / "cats" / "c.png", _random_uint8(1, (4, 4)))
    with pytest.raises(ValueError, match="top.png.*cats/"):
        load_image_folder(tmp_path)


def test_check_masks():
    images = torch.zeros(2, 3, 8, 8)
    check_masks(images, torch.full((2, 8, 8), 3), num_classes=4)
    with pytest.raises(ValueError, match=r"\(2, 8, 7\).*\(2, 3, 8, 8\)"):
        check_masks(images, torch.zeros(2, 8, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes=3"):
        check_masks(images, torch.full((2, 8, 8), 3), num_classes=3)
    with pytest.raises(ValueError, match="dtype"):
        check_masks(images, torch.zeros(2, 8, 8))
