"""IDX files (MNIST, Fashion-MNIST), parsed and validated here: magic, dims, sizes, counts, labels."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from convergent._errors import CorruptFileError, DataNotFoundError

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
#: Where Debian's packages install the data (dataset-fashion-mnist; an MNIST package may follow).
DEFAULT_DIRS = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
}
HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (`apt-get install dataset-fashion-mnist`), or pass "
                     "--data-dir DIR with the four IDX files",
    "mnist": "pass --data-dir DIR with the four MNIST IDX files",
}


def read_idx(path: str | os.PathLike, *, expect_dims: int) -> np.ndarray:
    """Read one IDX file (raw or gzip) of unsigned bytes with ``expect_dims`` dimensions."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise CorruptFileError(f"{path} cannot be read or decompressed ({exc}).") from exc
    if len(raw) < 4:
        raise CorruptFileError(f"{path} is truncated: {len(raw)} bytes, not even an IDX header.")
    magic = int.from_bytes(raw[:4], "big")
    expected = {3: IMAGES_MAGIC, 1: LABELS_MAGIC}[expect_dims]
    if magic != expected:
        raise CorruptFileError(
            f"{path} has IDX magic number 0x{magic:08x}, expected 0x{expected:08x} (unsigned bytes, "
            f"{expect_dims} dims). It is not the right IDX file or it is corrupt."
        )
    header = 4 + 4 * expect_dims
    if len(raw) < header:
        raise CorruptFileError(f"{path} is truncated inside its header ({len(raw)} bytes).")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expect_dims)]
    size = header + int(np.prod(dims))
    if len(raw) != size:
        what = "truncated" if len(raw) < size else "longer than its header says (trailing bytes)"
        raise CorruptFileError(
            f"{path} is {what}: {len(raw)} bytes, expected {size} for dims {dims}. Re-download or "
            "reinstall the file."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_dir(name: str, data_dir: str | os.PathLike | None) -> tuple[Path, dict[tuple[str, str], Path]]:
    """The directory holding all four IDX files (each raw or ``.gz``) and their paths."""
    candidates = [Path(data_dir)] if data_dir is not None else list(DEFAULT_DIRS[name])
    searched = []
    for directory in candidates:
        # Debian ships the files directly in the directory; some layouts add a 'raw' subfolder
        for d in (directory, directory / "raw"):
            searched.append(d)
            found = {}
            for key, stem in FILES.items():
                for candidate in (d / stem, d / f"{stem}.gz"):
                    if candidate.is_file():
                        found[key] = candidate
                        break
            if len(found) == len(FILES):
                return d, found
    wanted = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
    raise DataNotFoundError(
        f"The {name} IDX files were not found. Looked in: {', '.join(map(str, searched))}. "
        f"Expected the four files {wanted}. To get them: {HOW_TO_GET[name]}."
    )


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None):
    """(train_x, train_y, test_x, test_y, source) with images as (N, 1, H, W) floats in [0, 1]."""
    directory, files = find_idx_dir(name, data_dir)
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(files[(split, "images")], expect_dims=3)
        labels = read_idx(files[(split, "labels")], expect_dims=1)
        if len(images) != len(labels):
            raise CorruptFileError(
                f"{files[(split, 'images')]} holds {len(images)} images but "
                f"{files[(split, 'labels')]} holds {len(labels)} labels; the files do not belong "
                "together."
            )
        if len(labels) and labels.max() > 9:
            raise CorruptFileError(
                f"{files[(split, 'labels')]} has label {int(labels.max())}; {name} labels are 0..9."
            )
        arrays[split] = (images[:, None].astype(np.float64) / 255.0, labels.astype(np.int64))
    if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
        raise CorruptFileError(f"Train and test images in {directory} differ in size.")
    return (*arrays["train"], *arrays["test"], str(directory))
