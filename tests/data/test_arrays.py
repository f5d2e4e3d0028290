import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flowforge.data.arrays import ArrayDataset, load_array


def test_csv_round_trip_with_and_without_header(tmp_path):
    a = np.random.default_rng(0).normal(size=(20, 3))
    plain, headed = tmp_path / "plain.csv", tmp_path / "headed.CSV"
    np.savetxt(plain, a, delimiter=",", fmt="%.17g")
    np.savetxt(headed, a, delimiter=",", fmt="%.17g", header="x,y,z", comments="")
    for path in (plain, headed):
        t = load_array(path, dtype=torch.float64)
        assert t.shape == (20, 3) and t.dtype == torch.float64
        assert np.array_equal(t.numpy(), a)  # %.17g round-trips float64 exactly
    assert load_array(plain).dtype == torch.float32


def test_npy_round_trip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", a)
    assert torch.equal(load_array(tmp_path / "a.npy"), torch.from_numpy(a))


def test_csv_blank_lines_are_skipped_and_rows_keep_editor_numbers(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("x,y\n1,2\n\n3,4\n5,oops\n")
    with pytest.raises(ValueError, match=r"row 5, column 2: 'oops' is not a number") as e:
        load_array(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("1,2\n3,abc\n", r"row 2, column 2: 'abc' is not a number"),
        ("1,abc\n3,4\n", r"row 1, column 2: 'abc'"),  # partly numeric first row is data
        ("a,b\n1,2\n3,\n", r"row 3, column 2: '' is not a number"),
        ("1,2\n3,nan\n", r"row 2, column 2 holds 'nan' \(NaN or infinite\)"),
        ("1,2\n-inf,4\n", r"row 2, column 1 holds '-inf'"),
        ("1,2\n3\n", r"row 2 has 1 columns but row 1 has 2"),
        ("h1,h2\n1,2,3\n4,5\n", r"row 3 has 2 columns but row 2 has 3"),
        ("x,y\n", r"no data rows"),
    ],
)
def test_csv_errors_name_row_and_column(tmp_path, text, pattern):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=pattern) as e:
        load_array(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize(
    "array, pattern",
    [
        (np.zeros(5), r"reshape\(-1, 1\)"),
        (np.zeros((2, 3, 4)), r"reshape\(len\(a\), -1\)"),
        (np.array([[1.0, 2.0], [np.inf, 3.0], [np.nan, 1.0]]), r"a\[1, 0\].*2 in all"),
        (np.array([["a", "b"]]), "not numeric"),
    ],
)
def test_npy_errors(tmp_path, array, pattern):
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(ValueError, match=pattern) as e:
        load_array(p)
    assert str(p) in str(e.value)


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv.*\.npy"):
        load_array(tmp_path / "data.txt")
    missing = tmp_path / "nothere.csv"
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        load_array(missing)


def test_array_dataset():
    x, labels = torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 0, 1, 1])
    ds = ArrayDataset(x, labels)
    assert len(ds) == 5
    xi, ki = ds[3]
    assert torch.equal(xi, x[3]) and ki.item() == 1
    assert torch.equal(ArrayDataset(x)[2], x[2])
    batches = list(DataLoader(ds, batch_size=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    with pytest.raises(ValueError, match="one label per sample"):
        ArrayDataset(x, labels[:3])


@pytest.mark.parametrize(
    "data, suffix, pattern",
    [
        ("x,y\n1,2\n".encode("utf-16"), ".csv", r"not a UTF-8 text CSV \(byte 0"),
        (bytes(range(128, 256)), ".csv", "not a UTF-8 text CSV"),
        (b"1,2\n3,1e39\n", ".csv", r"row 2, column 2 holds '1e39', beyond the float32 range"),
        (b"1,2\n-1e300,4\n", ".csv", r"row 2, column 1 holds '-1e300'"),
        (bytes(range(256)), ".npy", "not a .npy file"),
    ],
)
def test_files_that_are_not_what_they_say_are_named(tmp_path, data, suffix, pattern):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=pattern) as e:
        load_array(p)
    assert str(p) in str(e.value) and "allow_pickle" not in str(e.value)


def test_object_truncated_and_empty_npy_are_named_without_unsafe_advice(tmp_path):
    objects, truncated, empty = tmp_path / "o.npy", tmp_path / "t.npy", tmp_path / "e.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(truncated, np.ones((50, 2)))
    truncated.write_bytes(truncated.read_bytes()[:200])
    np.save(empty, np.zeros((10, 0)))
    for path, pattern in (
        (objects, "holds Python objects"),
        (truncated, "truncated or corrupt"),
        (empty, r"shape \(10, 0\).*at least one row and one feature column"),
    ):
        with pytest.raises(ValueError, match=pattern) as e:
            load_array(path)
        assert "allow_pickle" not in str(e.value)  # never the unsafe way out
    big = tmp_path / "big.npy"
    np.save(big, np.array([[1.0, 4e38]]))
    with pytest.raises(ValueError, match=r"a\[0, 1\].*float32"):
        load_array(big)
