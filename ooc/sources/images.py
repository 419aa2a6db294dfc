"""Image sources: folders of image files in class sub-folders, and IDX files (MNIST's own format)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ooc.errors import OptionError, SourceError
from ooc.schema import Schema
from ooc.sources.base import SPLITS, FileSource, RandomAccess, parse_size, read_exact

COLORS = ("auto", "rgb", "gray")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IMAGE_FOLDER_HELP = (
    "an image-folder source needs train/ and test/, "
    "each with a sub-folder of images per class (train/3/xxx.png)"
)
_GRAY_MODES = ("1", "L", "LA", "La")


def is_image_folder(path: str | Path) -> bool:
    """A folder with train/ or test/ in it: one missing is then reported as such, not as missing IDX files."""
    path = Path(path)
    return path.is_dir() and any((path / split).is_dir() for split in SPLITS)


@dataclass
class _ImageSplit:
    """One split's files as short strings, the one part of an image folder held in memory."""

    paths: list[str]  # relative to the source folder, in sample order
    labels: np.ndarray


@dataclass
class ImageFolderSource(FileSource, RandomAccess):
    """A folder of images in class sub-folders, ``train/3/xxx.png`` and ``test/3/yyy.png``, the layout
    image datasets are often published in. Images are decoded with Pillow a chunk at a time; they keep
    their colour (``color="auto"``: grayscale if the first image is, RGB otherwise; or force ``rgb`` /
    ``gray``) and, with ``size``, are resized; only the list of file names is held in memory.

    Class folders named by whole numbers are those labels; other names are numbered in sorted order
    (``classes`` lists the names by label). Samples are listed by label, then file name: class by
    class, which is why a conversion shuffles them (``ooc.sources.base.Shuffled``)."""

    path: Path
    size: tuple[int, int] | None = None
    color: str = "auto"
    classes: list[str] = field(default_factory=list)
    files: dict[str, _ImageSplit] = field(default_factory=dict)
    shape: tuple[int, int, int] | None = None
    _sha256: str | None = None

    @classmethod
    def open(
        cls, path: str | Path, size=None, color: str = "auto", need_test: bool = True
    ) -> ImageFolderSource:
        if color not in COLORS:
            raise OptionError(f"--color must be one of {', '.join(COLORS)}, got {color!r}")
        source = cls(Path(path).absolute(), parse_size(size), color)
        folders = {}
        for split in SPLITS:
            folder = source.path / split
            if not folder.is_dir():
                if split == "test" and not need_test:
                    continue
                fix = (
                    "; or pass --test-fraction F to carve the test split from train/"
                    if split == "test"
                    else ""
                )
                raise SourceError(f"{source.path} has no {split}/ folder: {_IMAGE_FOLDER_HELP}{fix}")
            folders[split] = {entry.name: Path(entry.path) for entry in _list(folder) if entry.is_dir()}
        if not folders["train"]:
            raise SourceError(f"{source.path / 'train'} has no class folders: {_IMAGE_FOLDER_HELP}")
        labels = _class_labels(source.path / "train", sorted(folders["train"]))
        source.classes = sorted(labels, key=labels.get)
        dtype = np.uint8 if max(labels.values()) < 256 else np.int32
        for split in folders:
            source.files[split] = source._list_split(split, folders[split], labels, dtype)
        first = source.path / source.files["train"].paths[0]
        with _open_image(first) as image:
            gray = color == "gray" or (color == "auto" and image.mode in _GRAY_MODES)
            height, width = source.size or (image.height, image.width)
        source.shape = (height, width, 1 if gray else 3)
        return source

    def _list_split(self, split, folders, labels, dtype) -> _ImageSplit:
        unknown = sorted(set(folders) - set(labels))
        if unknown:
            raise SourceError(
                f"{folders[unknown[0]]} is a class that train/ does not have; "
                f"add {self.path / 'train' / unknown[0]} or remove it (train/ has {', '.join(self.classes)})"
            )
        paths, split_labels = [], []
        for name in sorted(folders, key=labels.get):
            images = sorted(
                entry.name
                for entry in _list(folders[name])
                if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
            )
            paths += [f"{split}/{name}/{image}" for image in images]
            split_labels += [labels[name]] * len(images)
        if not paths:
            raise SourceError(
                f"{self.path / split} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders: "
                f"{_IMAGE_FOLDER_HELP}"
            )
        return _ImageSplit(paths, np.array(split_labels, dtype))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.shape

    @property
    def schema(self) -> Schema:
        return Schema(
            self.shape,
            np.uint8,
            "pixels",
            "classes",
            (),
            self.files["train"].labels.dtype,
            len(self.classes),
            tuple(self.classes),
        )

    def num_samples(self, split: str) -> int:
        return len(self.files[split].paths)

    def targets(self, split: str) -> np.ndarray:
        return self.files[split].labels

    def _hashed_files(self) -> list[Path]:
        return [self.path / p for split in self.files for p in self.files[split].paths]

    def _file_tag(self, path: Path) -> bytes:
        """The file's place, so that moving an image to another class folder changes the checksum."""
        return f"{path.relative_to(self.path).as_posix()}\0{path.stat().st_size}\0".encode()

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        files = self.files[split]
        x = np.empty((len(indices), *self.shape), np.uint8)
        for i, index in enumerate(indices.tolist()):
            x[i] = self._decode(self.path / files.paths[index])
        return x, files.labels[indices]

    def _decode(self, path: Path) -> np.ndarray:
        height, width, channels = self.shape
        with _open_image(path) as image:
            if image.mode.startswith(("I", "F")):  # convert("L") would clip these to 0-255, not scale them
                raise SourceError(
                    f"{path} has {image.mode} pixels, wider than 8 bits, which ooc would clip; save the "
                    "images as 8-bit"
                )
            if self.color == "auto" and channels == 1 and image.mode not in _GRAY_MODES:
                first = self.path / self.files["train"].paths[0]
                raise SourceError(
                    f"{path} is in colour ({image.mode}) but {first} is grayscale; pass --color rgb to keep "
                    "colour "
                    "or --color gray to convert every image to grayscale"
                )
            try:
                converted = image.convert("L" if channels == 1 else "RGB")
                if self.size is not None and converted.size != (width, height):
                    converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            except _PIL_ERRORS as e:
                raise _unreadable(path, e) from None
        if converted.size != (width, height):
            first = self.path / self.files["train"].paths[0]
            raise SourceError(
                f"{path} is {converted.height}x{converted.width} pixels but {first} is {height}x{width}; "
                f"pass --size {height}x{width} (or --size N for NxN) to resize every image"
            )
        return np.asarray(converted).reshape(self.shape)


def _class_labels(train: Path, names: list[str]) -> dict[str, int]:
    """Class folder name -> label: the number itself when every name is one, else the sorted position."""
    if not all(name.isascii() and name.isdigit() for name in names):
        return {name: i for i, name in enumerate(names)}
    labels = {name: int(name) for name in names}
    seen = {}
    for name, label in labels.items():
        if label in seen:
            raise SourceError(
                f"{train / seen[label]} and {train / name} are both class {label}; merge or rename one"
            )
        seen[label] = name
    return labels


def _list(folder: Path) -> list[os.DirEntry]:
    """The folder's entries but hidden ones (.DS_Store, .ipynb_checkpoints)."""
    try:
        with os.scandir(folder) as entries:
            listed = [entry for entry in entries if not entry.name.startswith(".")]
    except OSError as e:
        raise SourceError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    for entry in listed:
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogates
            shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
            raise SourceError(
                f"{shown}: the name is not valid UTF-8, and ooc records class and file names as UTF-8 text; "
                "rename it"
            ) from None
    return listed


# what Pillow raises for a broken file (UnidentifiedImageError and truncated data are OSErrors)
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _open_image(path: Path) -> Image.Image:
    """Only the header is read here; the pixels when the image is converted."""
    try:
        return Image.open(path)
    except _PIL_ERRORS as e:
        raise _unreadable(path, e) from None


def _unreadable(path: Path, error: Exception) -> SourceError:
    return SourceError(f"{path} is not a readable image ({error}); repair or remove the file")


_IDX_PREFIX = {"train": "train", "test": "t10k"}


@dataclass
class _IdxFile:
    path: Path
    shape: tuple[int, ...]
    header_bytes: int


@dataclass
class IdxSource(FileSource):
    """A folder of IDX files, the format MNIST and its drop-in replacements (Fashion-MNIST, KMNIST,
    EMNIST) are published in: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``.

    The format: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then
    each dimension as a big-endian uint32, then the values in C order. Files are streamed."""

    path: Path
    files: dict[str, _IdxFile] = field(default_factory=dict)
    _sha256: str | None = None

    @classmethod
    def open(cls, path: str | Path) -> IdxSource:
        source = cls(Path(path).absolute())
        for split, prefix in _IDX_PREFIX.items():
            for kind, ndim in (("images", 3), ("labels", 1)):
                source.files[f"{split}_{kind}"] = _read_idx_header(
                    _find_idx(source.path, prefix, kind, ndim), ndim
                )
        for split in SPLITS:
            images, labels = source.files[f"{split}_images"], source.files[f"{split}_labels"]
            if images.shape[0] != labels.shape[0]:
                raise SourceError(
                    f"{images.path} holds {images.shape[0]} images but {labels.path} holds {labels.shape[0]} "
                    "labels"
                )
        if source.files["train_images"].shape[1:] != source.files["test_images"].shape[1:]:
            raise SourceError(
                f"{source.path}: train images are {source.files['train_images'].shape[1:]} but test images "
                f"are {source.files['test_images'].shape[1:]}"
            )
        return source

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    @property
    def schema(self) -> Schema:
        return Schema((*self.files["train_images"].shape[1:], 1), np.uint8, "pixels", "classes", (), np.uint8)

    def num_samples(self, split: str) -> int:
        return self.files[f"{split}_images"].shape[0]

    def _hashed_files(self) -> list[Path]:
        return [
            self.files[key].path for key in ("train_images", "train_labels", "test_images", "test_labels")
        ]

    def iter_chunks(
        self, split: str, chunk_size: int, limit: int | None = None, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Samples ``[start, min(limit, n))``; those before ``start`` are skipped by seeking (a .gz
        file reads and discards them)."""
        images, labels = self.files[f"{split}_images"], self.files[f"{split}_labels"]
        total = images.shape[0] if limit is None else min(limit, images.shape[0])
        sample_bytes = int(np.prod(images.shape[1:]))
        with _open_idx(images.path) as xf, _open_idx(labels.path) as yf:
            xf.seek(images.header_bytes + min(start, total) * sample_bytes)
            yf.seek(labels.header_bytes + min(start, total))
            for first in range(start, total, chunk_size):
                n = min(chunk_size, total - first)
                x = read_exact(xf, n * sample_bytes, f"{images.path}")
                y = read_exact(yf, n, f"{labels.path}")
                yield (
                    np.frombuffer(x, np.uint8).reshape((n, *images.shape[1:], 1)),
                    np.frombuffer(y, np.uint8),
                )


def _find_idx(folder: Path, prefix: str, kind: str, ndim: int) -> Path:
    names = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    for name in names:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise SourceError(
        f"{folder} has no {names[0]}[.gz]: an IDX source folder needs train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may be .gz)"
    )


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx_header(path: Path, ndim: int) -> _IdxFile:
    try:
        with _open_idx(path) as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08 or magic[3] != ndim:
                raise SourceError(
                    f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) "
                    f"(magic number {magic.hex() or 'missing'}, expected 000008{ndim:02x})"
                )
            dims = f.read(4 * ndim)
            if len(dims) != 4 * ndim:
                raise SourceError(f"{path} is truncated inside its header")
            shape = tuple(int(d) for d in np.frombuffer(dims, ">u4"))
            # the size check: read to the end once (gzip cannot seek cheaply; plain files use their size)
            expected = int(np.prod(shape))
            if path.suffix == ".gz":
                data = 0
                for block in iter(lambda: f.read(1 << 20), b""):
                    data += len(block)
            else:
                data = path.stat().st_size - 4 - 4 * ndim
    except (OSError, gzip.BadGzipFile, EOFError) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None
    if data != expected:
        raise SourceError(
            f"{path} is {'truncated' if data < expected else 'longer than its header says'}: "
            f"the header promises {expected} values of shape {shape}, the file holds {data}"
        )
    return _IdxFile(path, shape, 4 + 4 * ndim)
