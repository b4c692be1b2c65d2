"""IDX files (MNIST, Fashion-MNIST): found, parsed and checked here, raw or gzip-compressed.

An IDX file is a 4-byte magic number ``0x0000TTDD`` (TT the element type, 0x08 for unsigned bytes;
DD the number of dimensions), DD big-endian uint32 sizes, then the elements in C order.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from convergent._errors import CorruptFileError, DataNotFoundError
from convergent.data._dataset import RawSplits

UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N,)
NUM_CLASSES = 10
GZIP_MAGIC = b"\x1f\x8b"

#: The four files, by (split, kind). Each may also end in ``.gz``, and the MNIST site's
#: ``train-images.idx3-ubyte`` spelling (a dot before ``idx``) is accepted too.
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
#: Where to look without ``data_dir``: Debian's ``dataset-fashion-mnist`` installs the four
#: ``.gz`` files into /usr/share/datasets/fashion-mnist; MNIST has no Debian package (yet), so the
#: same layout is assumed for it.
DEFAULT_DIRS = {
    "fashion-mnist": [
        Path("/usr/share/datasets/fashion-mnist"),
        Path("/usr/local/share/datasets/fashion-mnist"),
    ],
    "mnist": [Path("/usr/share/datasets/mnist"), Path("/usr/local/share/datasets/mnist")],
}
#: torchvision keeps the files in ``<root>/<folder>/raw``; accepted under ``data_dir``.
TORCHVISION_FOLDERS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (`apt-get install dataset-fashion-mnist`, which "
    "puts them in /usr/share/datasets/fashion-mnist), or pass --data-dir DIR (data_dir=DIR) naming "
    "a directory that holds the four IDX files",
    "mnist": "Debian has no MNIST package: download the four MNIST IDX files and pass --data-dir "
    "DIR (data_dir=DIR) naming the directory that holds them, or put them in "
    "/usr/share/datasets/mnist",
}


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with ``ndim`` dimensions, raw or gzip-compressed.

    Parameters
    ----------
    path : path
        The file. Compression is recognised by content, not by the name.
    ndim : int
        The number of dimensions the file must have: 3 for images, 1 for labels.

    Returns
    -------
    np.ndarray, uint8, read-only
        Shape as the header says, e.g. (N, H, W) for images or (N,) for labels.

    Raises
    ------
    ValueError
        ``ndim`` is not an int in 1..255.
    DataNotFoundError
        The file does not exist.
    CorruptFileError
        Not gzip-decodable, a wrong magic number (element type or number of dimensions), or a byte
        count different from what the header's sizes imply (truncated or trailing bytes).
    """
    if isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= 255:
        raise ValueError(f"The 'ndim' parameter must be an int in 1..255. Got {ndim!r} instead.")
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"The IDX file {path} does not exist.")
    data = path.read_bytes()
    unpacked = ""
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFileError(
                f"{path} is a damaged gzip file ({exc}). Download or install it again."
            ) from exc
        unpacked = " after decompression"
    expected_magic = (UBYTE << 8) | ndim
    if len(data) < 4:
        raise CorruptFileError(
            f"{path} is truncated: {len(data)} bytes{unpacked}, too short for an IDX header."
        )
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise CorruptFileError(
            f"{path} has IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} (unsigned "
            f"bytes, {ndim} dimension{'s' if ndim > 1 else ''}). It is not the right IDX file, or "
            "it is damaged."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFileError(
            f"{path} is truncated: {len(data)} bytes{unpacked}, expected at least {header} for "
            f"the header of a {ndim}-dimensional IDX file."
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else f"{len(data) - expected} trailing bytes"
        raise CorruptFileError(
            f"{path} has the wrong size ({what}): {len(data)} bytes{unpacked}, expected "
            f"{expected} ({header}-byte header + shape {shape}). Download or install it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _spellings(stem: str) -> list[str]:
    dotted = stem.replace("-idx", ".idx")
    return [stem, f"{stem}.gz", dotted, f"{dotted}.gz"]


def find_idx_files(
    name: str, data_dir: str | os.PathLike | None
) -> tuple[Path, dict[tuple[str, str], Path]]:
    """The first directory holding all four IDX files of ``name``, and the files' paths.

    With ``data_dir`` the places are ``data_dir``, ``data_dir/raw`` and torchvision's
    ``data_dir/<FashionMNIST|MNIST>/raw``; without it, :data:`DEFAULT_DIRS`. A
    :class:`DataNotFoundError` lists every place with what was missing there.
    """
    if data_dir is None:
        places = list(DEFAULT_DIRS[name])
    else:
        root = Path(data_dir).expanduser()
        places = [root, root / "raw", root / TORCHVISION_FOLDERS[name] / "raw"]
    report = []
    for place in places:
        if not place.is_dir():
            report.append(f"  {place} (no such directory)")
            continue
        found, missing = {}, []
        for key, stem in FILES.items():
            path = next((place / s for s in _spellings(stem) if (place / s).is_file()), None)
            if path is None:
                missing.append(f"{stem}[.gz]")
            else:
                found[key] = path
        if not missing:
            return place, found
        report.append(f"  {place} (missing {', '.join(missing)})")
    wanted = ", ".join(FILES.values())
    raise DataNotFoundError(
        f"The {name} IDX files were not found. Looked in:\n" + "\n".join(report) + "\n"
        f"Expected the four files {wanted} (each raw or .gz). To get them: {HOW_TO_GET[name]}."
    )


def load_idx_splits(name: str, data_dir: str | os.PathLike | None) -> RawSplits:
    """The train (``train-*``) and test (``t10k-*``) splits of an MNIST-style dataset.

    Returns
    -------
    RawSplits
        Images as (N, 1, H, W) uint8 (scale 255), labels int64 in 0..9.
    """
    directory, files = find_idx_files(name, data_dir)
    splits = {}
    for split in ("train", "test"):
        images_path, labels_path = files[(split, "images")], files[(split, "labels")]
        images = read_idx(images_path, 3)
        labels = read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise CorruptFileError(
                f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
                "labels; the two files do not belong together."
            )
        bad = labels >= NUM_CLASSES
        if bad.any():
            raise CorruptFileError(
                f"{labels_path} has {int(bad.sum())} labels outside 0..{NUM_CLASSES - 1} (largest "
                f"{int(labels.max())}); it is not a {name} label file, or it is damaged."
            )
        splits[split] = (images[:, None], labels.astype(np.int64))
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise CorruptFileError(
            f"The train images in {directory} are {splits['train'][0].shape[2:]} pixels but the "
            f"test images are {splits['test'][0].shape[2:]}; the files do not belong together."
        )
    return RawSplits(*splits["train"], *splits["test"], str(directory), NUM_CLASSES, scale=255.0)
