"""Dataset sources: where samples come from before they are converted.

A source hands out each split as a stream of ``(x, y)`` chunks, ``x`` uint8 of shape
``(n, height, width)`` and ``y`` integer labels, so a writer never needs the whole dataset in memory.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ooc.errors import OptionError, SourceError

SPLITS = ("train", "test")
BUNDLED_MNIST = Path("data") / "mnist.npz"
_REPO_MNIST = Path(__file__).resolve().parent.parent / "data" / "mnist.npz"


@dataclass
class _Member:
    """Where one array lies inside the .npz (a zip member holding a .npy stream)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


class _FileSource:
    """What every file-backed source shares: its name, its splits and a checksum of its files."""

    path: Path
    _sha256: str | None

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def _hashed_files(self) -> list[Path]:
        return [self.path]

    def _file_tag(self, path: Path) -> bytes:
        """Hashed before each file's bytes; empty where the file names carry no data."""
        return b""

    def sha256(self) -> str:
        """Of the source's file bytes as stored, streamed."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for path in self._hashed_files():
                digest.update(self._file_tag(path))
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256


@dataclass
class NpzSource(_FileSource):
    """A ``.npz`` in the layout of ``keras.datasets.mnist`` (x_train, y_train, x_test, y_test).

    Arrays are streamed from the zip members chunk by chunk (``np.load`` would read each array
    whole), so a source larger than memory can be converted.
    """

    path: Path
    members: dict[str, _Member] = field(default_factory=dict)
    _sha256: str | None = None

    @classmethod
    def open(cls, path: str | Path) -> "NpzSource":
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"{path}: no such source file; pass --source PATH to an .npz with x_train, y_train, x_test, y_test")
        source = cls(path.absolute())  # absolute: tasks on --dask workers resolve it, not our working directory
        try:
            with zipfile.ZipFile(path) as zf:
                names = {n.removesuffix(".npy") for n in zf.namelist()}
                for key in ("x_train", "y_train", "x_test", "y_test"):
                    if key not in names:
                        raise SourceError(f"{path} has no array '{key}' (found: {', '.join(sorted(names)) or 'none'}); an .npz source needs x_train, y_train, x_test, y_test")
                    with zf.open(key + ".npy") as fp:
                        shape, dtype = _read_npy_header(fp, f"{path}:{key}")
                    source.members[key] = _Member(key + ".npy", shape, dtype)
        except (zipfile.BadZipFile, OSError) as e:
            raise SourceError(f"{path} is not a readable .npz file ({e})") from None
        source._validate()
        return source

    def _validate(self) -> None:
        shapes = {}
        for split in SPLITS:
            x, y = self.members[f"x_{split}"], self.members[f"y_{split}"]
            if x.dtype != np.uint8 or len(x.shape) != 3:
                raise SourceError(f"{self.path}: x_{split} is {x.dtype} of shape {x.shape}; ooc expects uint8 images of shape (n, height, width)")
            if y.dtype.kind not in "iu" or len(y.shape) != 1:
                raise SourceError(f"{self.path}: y_{split} is {y.dtype} of shape {y.shape}; ooc expects integer labels of shape (n,)")
            if y.shape[0] != x.shape[0]:
                raise SourceError(f"{self.path}: x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]} labels")
            shapes[split] = x.shape[1:]
        if shapes["train"] != shapes["test"]:
            raise SourceError(f"{self.path}: train images are {shapes['train']} but test images are {shapes['test']}")

    @property
    def sample_shape(self) -> tuple[int, int]:
        return self.members["x_train"].shape[1:]

    def num_samples(self, split: str) -> int:
        return self.members[f"x_{split}"].shape[0]

    def label_dtype(self, split: str) -> np.dtype:
        return self.members[f"y_{split}"].dtype

    def iter_chunks(self, split: str, chunk_size: int, limit: int | None = None, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(x, y)`` for samples ``[start, min(limit, n))`` in order, ``chunk_size`` at a time;
        labels keep the source's dtype (uint8 for MNIST), which the binary layouts store as is.
        Samples before ``start`` (a resumed conversion's) are skipped by seeking, which in a
        compressed member reads and discards them."""
        x_m, y_m = self.members[f"x_{split}"], self.members[f"y_{split}"]
        total = x_m.shape[0] if limit is None else min(limit, x_m.shape[0])
        sample_bytes = int(np.prod(x_m.shape[1:])) * x_m.dtype.itemsize
        with zipfile.ZipFile(self.path) as zf, zf.open(x_m.name) as xf, zf.open(y_m.name) as yf:
            _read_npy_header(xf, x_m.name)
            _read_npy_header(yf, y_m.name)
            if start:
                xf.seek(min(start, total) * sample_bytes, os.SEEK_CUR)
                yf.seek(min(start, total) * y_m.dtype.itemsize, os.SEEK_CUR)
            for start in range(start, total, chunk_size):
                n = min(chunk_size, total - start)
                x = _read_exact(xf, n * sample_bytes, f"{self.path}:{x_m.name}")
                y = _read_exact(yf, n * y_m.dtype.itemsize, f"{self.path}:{y_m.name}")
                yield np.frombuffer(x, np.uint8).reshape((n, *x_m.shape[1:])), np.frombuffer(y, y_m.dtype)


def _read_npy_header(fp, where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except ValueError as e:
        raise SourceError(f"{where} is not a valid .npy array ({e})") from None
    if fortran or dtype.hasobject:
        raise SourceError(f"{where} is a Fortran-ordered or object array; save it with np.savez from a C-ordered numeric array")
    return shape, dtype


def _read_exact(fp, nbytes: int, where: str) -> bytes:
    data = fp.read(nbytes)
    if len(data) != nbytes:
        raise SourceError(f"{where} is truncated: expected {nbytes} more bytes, got {len(data)}")
    return data


def as_source(source, size=None):
    """A source object as given, or the source at a path (None: the default MNIST)."""
    if source is None or isinstance(source, (str, os.PathLike)):
        return open_source(source, size=size)
    size = parse_size(size)
    if size is not None and getattr(source, "size", None) != size:
        raise SourceError(f"--size applies when the source is opened from a path; open it with ImageFolderSource.open(path, size={size})")
    return source


def open_source(path: str | Path | None = None, size=None) -> "NpzSource | IdxSource | ImageFolderSource":
    """The ``.npz`` file, IDX folder or image folder at ``path``; by default the bundled MNIST, else
    ``keras.datasets.mnist``. ``size`` (N or (H, W)) resizes an image folder's images."""
    if path is not None and is_image_folder(path):
        return ImageFolderSource.open(path, size=size)
    if parse_size(size) is not None and (path is None or Path(path).exists()):  # else: "no such source file"
        what = "the default MNIST" if path is None else str(path)
        raise SourceError(f"--size applies to image-folder sources only; {what} is not one "
                          "(an image folder has train/ and test/ with a sub-folder of images per class); drop --size")
    if path is not None:
        return IdxSource.open(path) if Path(path).is_dir() else NpzSource.open(path)
    for candidate in (BUNDLED_MNIST, _REPO_MNIST):
        if candidate.is_file():
            return NpzSource.open(candidate)
    return NpzSource.open(_keras_mnist_path())


def _keras_mnist_path() -> Path:
    """Let keras.datasets.mnist fetch MNIST (or find its cached copy), then stream that file."""
    import keras

    try:
        keras.datasets.mnist.load_data()
    except Exception as e:  # network errors come in many types
        raise SourceError(f"{BUNDLED_MNIST} is missing and keras.datasets.mnist could not download MNIST ({e}); pass --source PATH") from None
    homes = [os.environ.get("KERAS_HOME", Path.home() / ".keras"), Path("/tmp/.keras")]
    for home in homes:
        cached = Path(home) / "datasets" / "mnist.npz"
        if cached.is_file():
            return cached
    raise SourceError(f"{BUNDLED_MNIST} is missing and keras' cached mnist.npz was not found; pass --source PATH")


@dataclass
class RepeatedSource:
    """``repeat`` copies of a source's train split, each copy after the first shifted by a random
    offset of up to ``max_shift`` pixels per image (a standard MNIST augmentation); the test split
    is left as it is. It streams like its source, so stores far larger than memory can be made
    from MNIST, for measuring how ooc behaves at scale."""

    source: NpzSource
    repeat: int
    seed: int = 0
    max_shift: int = 2

    def __getattr__(self, name):  # path, name, sample_shape, sha256, label_dtype: the source's
        if name.startswith("__") or name == "source":  # unpickling (a parallel conversion's workers) asks before `source` is set
            raise AttributeError(name)
        return getattr(self.source, name)

    @property
    def splits(self) -> tuple[str, ...]:
        return self.source.splits

    def num_samples(self, split: str) -> int:
        return self.source.num_samples(split) * (self.repeat if split == "train" else 1)

    def iter_chunks(self, split: str, chunk_size: int, limit: int | None = None, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of exactly ``chunk_size`` samples (the last may be short) across the copies,
        from sample ``start`` on. Each source chunk's shift is drawn from its copy and its number,
        so skipped copies are not read and a resumed stream holds the same samples."""
        if split != "train":
            yield from self.source.iter_chunks(split, chunk_size, limit, start=start)
            return
        per_copy = self.source.num_samples(split) if limit is None else min(limit, self.source.num_samples(split))
        pending_x, pending_y, pending = [], [], 0
        for copy in range(min(start // max(per_copy, 1), self.repeat), self.repeat):
            offset = max(0, start - copy * per_copy)  # samples of this copy already written
            first = offset // chunk_size
            chunks = self.source.iter_chunks(split, chunk_size, limit, start=first * chunk_size)
            for start_chunk, (x, y) in enumerate(chunks, first):
                if copy:
                    x = self._shift(x, np.random.default_rng([self.seed, copy, start_chunk]))
                if start_chunk == first and offset > first * chunk_size:
                    x, y = x[offset - first * chunk_size:], y[offset - first * chunk_size:]
                pending_x.append(x)
                pending_y.append(y)
                pending += len(x)
                while pending >= chunk_size:
                    xs, ys = np.concatenate(pending_x), np.concatenate(pending_y)
                    yield xs[:chunk_size], ys[:chunk_size]
                    pending_x, pending_y, pending = [xs[chunk_size:]], [ys[chunk_size:]], pending - chunk_size
        if pending:
            yield np.concatenate(pending_x), np.concatenate(pending_y)

    def _shift(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shifts = rng.integers(-self.max_shift, self.max_shift + 1, size=(len(x), 2))
        out = np.zeros_like(x)
        h, w = x.shape[1:]
        for (dy, dx) in {tuple(s) for s in shifts.tolist()}:
            sel = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            out[sel, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[sel, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        return out


_IDX_PREFIX = {"train": "train", "test": "t10k"}


@dataclass
class _IdxFile:
    path: Path
    shape: tuple[int, ...]
    header_bytes: int


@dataclass
class IdxSource(_FileSource):
    """A folder of IDX files, the format MNIST and its drop-in replacements (Fashion-MNIST, KMNIST,
    EMNIST) are published in: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``.

    The format: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then
    each dimension as a big-endian uint32, then the values in C order. Files are streamed."""

    path: Path
    files: dict[str, _IdxFile] = field(default_factory=dict)
    _sha256: str | None = None

    @classmethod
    def open(cls, path: str | Path) -> "IdxSource":
        source = cls(Path(path).absolute())
        for split, prefix in _IDX_PREFIX.items():
            for kind, ndim in (("images", 3), ("labels", 1)):
                source.files[f"{split}_{kind}"] = _read_idx_header(_find_idx(source.path, prefix, kind, ndim), ndim)
        for split in SPLITS:
            images, labels = source.files[f"{split}_images"], source.files[f"{split}_labels"]
            if images.shape[0] != labels.shape[0]:
                raise SourceError(f"{images.path} holds {images.shape[0]} images but {labels.path} holds {labels.shape[0]} labels")
        if source.files["train_images"].shape[1:] != source.files["test_images"].shape[1:]:
            raise SourceError(f"{source.path}: train images are {source.files['train_images'].shape[1:]} but test images are {source.files['test_images'].shape[1:]}")
        return source

    @property
    def sample_shape(self) -> tuple[int, int]:
        return self.files["train_images"].shape[1:]

    def num_samples(self, split: str) -> int:
        return self.files[f"{split}_images"].shape[0]

    def label_dtype(self, split: str) -> np.dtype:
        return np.dtype(np.uint8)

    def _hashed_files(self) -> list[Path]:
        return [self.files[key].path for key in ("train_images", "train_labels", "test_images", "test_labels")]

    def iter_chunks(self, split: str, chunk_size: int, limit: int | None = None, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Samples ``[start, min(limit, n))``; those before ``start`` are skipped by seeking (a .gz
        file reads and discards them)."""
        images, labels = self.files[f"{split}_images"], self.files[f"{split}_labels"]
        total = images.shape[0] if limit is None else min(limit, images.shape[0])
        sample_bytes = int(np.prod(images.shape[1:]))
        with _open_idx(images.path) as xf, _open_idx(labels.path) as yf:
            xf.seek(images.header_bytes + min(start, total) * sample_bytes)
            yf.seek(labels.header_bytes + min(start, total))
            for start in range(start, total, chunk_size):
                n = min(chunk_size, total - start)
                x = _read_exact(xf, n * sample_bytes, f"{images.path}")
                y = _read_exact(yf, n, f"{labels.path}")
                yield np.frombuffer(x, np.uint8).reshape((n, *images.shape[1:])), np.frombuffer(y, np.uint8)


def _find_idx(folder: Path, prefix: str, kind: str, ndim: int) -> Path:
    names = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    for name in names:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise SourceError(f"{folder} has no {names[0]}[.gz]: an IDX source folder needs train-images-idx3-ubyte, "
                      "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may be .gz)")


def _open_idx(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx_header(path: Path, ndim: int) -> _IdxFile:
    import gzip

    try:
        with _open_idx(path) as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08 or magic[3] != ndim:
                raise SourceError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) "
                                  f"(magic number {magic.hex() or 'missing'}, expected 000008{ndim:02x})")
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
        raise SourceError(f"{path} is {'truncated' if data < expected else 'longer than its header says'}: "
                          f"the header promises {expected} values of shape {shape}, the file holds {data}")
    return _IdxFile(path, shape, 4 + 4 * ndim)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IMAGE_FOLDER_HELP = "an image-folder source needs train/ and test/, each with a sub-folder of images per class (train/3/xxx.png)"


def is_image_folder(path: str | Path) -> bool:
    """A folder with train/ or test/ in it: one missing is then reported as such, not as missing IDX files."""
    path = Path(path)
    return path.is_dir() and any((path / split).is_dir() for split in SPLITS)


def parse_size(size) -> tuple[int, int] | None:
    """``--size`` as (height, width): from N, (H, W), or the command line's "N" and "HxW"."""
    if size is None:
        return None
    if isinstance(size, str):
        dims = [int(part) if part.strip().isdigit() else 0 for part in size.lower().split("x")]
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        dims = [size]
    elif isinstance(size, (tuple, list)) and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in size):
        dims = list(size)
    else:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 1:
        raise OptionError(f"--size must be N or HxW in pixels, e.g. 28 or 32x32, got {size!r}")
    return int(dims[0]), int(dims[-1])


@dataclass
class _ImageSplit:
    """One split's files as short strings, the one part of an image folder held in memory."""

    paths: list[str]  # relative to the source folder, in sample order
    labels: np.ndarray


@dataclass
class ImageFolderSource(_FileSource):
    """A folder of images in class sub-folders, ``train/3/xxx.png`` and ``test/3/yyy.png``, the layout
    image datasets are often published in. Images are decoded with Pillow chunk by chunk, made
    grayscale and, with ``size``, resized; only the list of file names is held in memory.

    Class folders named by whole numbers are those labels; other names are numbered in sorted order
    (``classes`` lists the names by label). Samples are ordered by label, then file name."""

    path: Path
    size: tuple[int, int] | None = None
    classes: list[str] = field(default_factory=list)
    files: dict[str, _ImageSplit] = field(default_factory=dict)
    shape: tuple[int, int] | None = None
    _sha256: str | None = None

    @classmethod
    def open(cls, path: str | Path, size=None) -> ImageFolderSource:
        source = cls(Path(path).absolute(), parse_size(size))
        folders = {}
        for split in SPLITS:
            folder = source.path / split
            if not folder.is_dir():
                raise SourceError(f"{source.path} has no {split}/ folder: {_IMAGE_FOLDER_HELP}")
            folders[split] = {entry.name: Path(entry.path) for entry in _list(folder) if entry.is_dir()}
        if not folders["train"]:
            raise SourceError(f"{source.path / 'train'} has no class folders: {_IMAGE_FOLDER_HELP}")
        labels = _class_labels(source.path / "train", sorted(folders["train"]))
        source.classes = sorted(labels, key=labels.get)
        dtype = np.uint8 if max(labels.values()) < 256 else np.int32
        for split in SPLITS:
            unknown = sorted(set(folders[split]) - set(labels))
            if unknown:
                raise SourceError(f"{folders[split][unknown[0]]} is a class that train/ does not have; "
                                  f"add {source.path / 'train' / unknown[0]} or remove it (train/ has {', '.join(source.classes)})")
            paths, split_labels = [], []
            for name in sorted(folders[split], key=labels.get):
                images = sorted(entry.name for entry in _list(folders[split][name])
                                if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES))
                paths += [f"{split}/{name}/{image}" for image in images]
                split_labels += [labels[name]] * len(images)
            if not paths:
                raise SourceError(f"{source.path / split} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders: {_IMAGE_FOLDER_HELP}")
            source.files[split] = _ImageSplit(paths, np.array(split_labels, dtype))
        if source.size is None:
            first = source.path / source.files["train"].paths[0]
            with _open_image(first) as image:
                source.shape = (image.height, image.width)
        else:
            source.shape = source.size
        return source

    @property
    def sample_shape(self) -> tuple[int, int]:
        return self.shape

    def num_samples(self, split: str) -> int:
        return len(self.files[split].paths)

    def label_dtype(self, split: str) -> np.dtype:
        return self.files[split].labels.dtype

    def _hashed_files(self) -> list[Path]:
        return [self.path / p for split in SPLITS for p in self.files[split].paths]

    def _file_tag(self, path: Path) -> bytes:
        """The file's place, so that moving an image to another class folder changes the checksum."""
        return f"{path.relative_to(self.path).as_posix()}\0{path.stat().st_size}\0".encode()

    def iter_chunks(self, split: str, chunk_size: int, limit: int | None = None, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Samples ``[start, min(limit, n))``; images before ``start`` are not opened."""
        files = self.files[split]
        total = len(files.paths) if limit is None else min(limit, len(files.paths))
        for start in range(start, total, chunk_size):
            n = min(chunk_size, total - start)
            x = np.empty((n, *self.shape), np.uint8)
            for i, relative in enumerate(files.paths[start:start + n]):
                x[i] = self._decode(self.path / relative)
            yield x, files.labels[start:start + n]

    def _decode(self, path: Path) -> np.ndarray:
        height, width = self.shape
        with _open_image(path) as image:
            if image.mode.startswith(("I", "F")):  # convert("L") would clip these to 0-255, not scale them
                raise SourceError(f"{path} has {image.mode} pixels, wider than 8 bits, which ooc would clip; save the images as 8-bit")
            try:
                gray = image.convert("L")
                if self.size is not None and gray.size != (width, height):
                    gray = gray.resize((width, height), Image.Resampling.BILINEAR)
            except _PIL_ERRORS as e:
                raise _unreadable(path, e) from None
        if gray.size != (width, height):
            first = self.path / self.files["train"].paths[0]
            raise SourceError(f"{path} is {gray.height}x{gray.width} pixels but {first} is {height}x{width}; "
                              f"pass --size {height}x{width} (or --size N for NxN) to resize every image")
        return np.asarray(gray)


def _class_labels(train: Path, names: list[str]) -> dict[str, int]:
    """Class folder name -> label: the number itself when every name is one, else the sorted position."""
    if not all(name.isascii() and name.isdigit() for name in names):
        return {name: i for i, name in enumerate(names)}
    labels = {name: int(name) for name in names}
    seen = {}
    for name, label in labels.items():
        if label in seen:
            raise SourceError(f"{train / seen[label]} and {train / name} are both class {label}; merge or rename one")
        seen[label] = name
    return labels


def _list(folder: Path) -> list[os.DirEntry]:
    """The folder's entries but hidden ones (.DS_Store, .ipynb_checkpoints)."""
    try:
        with os.scandir(folder) as entries:
            return [entry for entry in entries if not entry.name.startswith(".")]
    except OSError as e:
        raise SourceError(f"{folder}: cannot list the folder ({e.strerror or e})") from None


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
