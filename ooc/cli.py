"""The ``ooc`` command line: thin Typer commands over ``ooc.convert``, ``ooc.open_store`` and
``ooc.train``. Errors of ours print as one line on stderr and exit 1; bugs keep their traceback."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from enum import StrEnum

import typer

from ooc.adopt import adopt as run_adopt
from ooc.checkpoint import resume_command
from ooc.convert import convert as run_convert
from ooc.core.startup import import_tensorflow_quietly
from ooc.core.units import parse_bytes
from ooc.core.version import __version__
from ooc.errors import ConversionInterrupted, OocError, OptionError, UnknownFormatError
from ooc.formats import FORMATS, get_format, layouts
from ooc.formats.base import ParallelParts
from ooc.formats.text import DELIMITERS
from ooc.fs import disk_usage
from ooc.models import MODELS
from ooc.progress import Reporter, rate_text, took
from ooc.remote import is_url, location, parse_storage_options
from ooc.sampling import SHUFFLE_MODES
from ooc.schema import TARGET_KINDS
from ooc.sources import SourceOptions, open_source, parse_shape, parse_size
from ooc.stores import MemoryStore, open_store
from ooc.train import LOOPS, LR_SCHEDULES, ON_ERROR, TrainConfig
from ooc.train import train as run_train
from ooc.verify import verify as run_verify

app = typer.Typer(
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Train Keras models on data that does not fit in memory.",
)
FORMAT_CHOICES = ", ".join(FORMATS)
DATA_DIR = Path("data")
MODEL_HELP = (
    "the network: the recipe's LeNet, its wide revision, an MLP for any sample shape, a saved model "
    "(my_net.keras) or a function (mypkg.nets:build, called with the input shape and the task)"
)
STORAGE_OPTION_HELP = (
    "key=value for the filesystem of a URL --out/--path (fsspec/s3fs), repeatable: "
    "endpoint_url=http://127.0.0.1:9000, "
    "key=…, secret=…, anon=true, client_kwargs.region_name=…; default: the AWS_* environment variables"
)


def _enum(name: str, values) -> type[StrEnum]:
    return StrEnum(name, {value.replace("-", "_"): value for value in values})


# The choices of the options, for --help ([csv|hdf5|…]) and shell completion. The values stay
# checked where they are used, so a bad one keeps its one-line error ("unknown --store 'x': …").
Format = _enum("Format", FORMATS)
Store = _enum("Store", [*FORMATS, "memory"])
Shuffle = _enum("Shuffle", SHUFFLE_MODES)
TargetKind = _enum("TargetKind", TARGET_KINDS)
Color = _enum("Color", ("auto", "rgb", "gray"))
Order = _enum("Order", ("auto", "shuffle", "source"))
Loop = _enum("Loop", LOOPS)
LrSchedule = _enum("LrSchedule", LR_SCHEDULES)
OnError = _enum("OnError", ON_ERROR)
Model = _enum("Model", MODELS)
Delimiter = _enum("Delimiter", DELIMITERS)
# what the layouts declare (``OPTIONS``, their writers' capabilities), said in the options' help;
# whether a compression applies to --format is checked by the layout, with its own message
Compression = _enum(
    "Compression", dict.fromkeys(c for n in FORMATS for c in get_format(n).OPTIONS.compressions)
)
COMPRESSION_HELP = "; ".join(
    f"{n}: {', '.join(o.compressions)}" for n in FORMATS if len((o := get_format(n).OPTIONS).compressions) > 1
)
CHUNKED = ", ".join(layouts(lambda m: m.OPTIONS.default_chunk_size is not None))
SHARDED = {
    n: get_format(n).OPTIONS.default_shard_size for n in layouts(lambda m: m.OPTIONS.default_shard_size)
}
REMOTE = layouts(lambda m: m.OPTIONS.remote)


def _listed(names: list[str], last: str) -> str:
    """``a, b and c`` (``last``: "and" or "or")."""
    return f" {last} ".join(", ".join(names).rsplit(", ", 1))


PARALLEL = ", ".join(layouts(lambda m: issubclass(m.Writer, ParallelParts)))


def choice(enum: type[StrEnum], **option) -> typer.models.OptionInfo:
    """An option that shows ``[a|b|c]`` in --help and completes those values in the shell, but takes
    any string: ooc checks it where it is used, with its one-line error (a parse-time refusal would be
    a usage box and exit 2; the --compression a layout takes depends on --format)."""
    values = [member.value for member in enum]

    def complete(incomplete: str) -> list[str]:
        return [value for value in values if value.startswith(incomplete)]

    return typer.Option(
        *option.pop("param_decls", ()), metavar=f"[{'|'.join(values)}]", autocompletion=complete, **option
    )


class _State:
    quiet = False  # `ooc --quiet COMMAND`
    signal = None  # the signal that stopped the command, for its exit status (128 + number)


def _print_version(value: bool) -> None:
    if value:
        print(f"ooc {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print ooc's version and exit"
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="no progress on stderr, for every command (each also takes --quiet)"
        ),
    ] = False,
) -> None:
    _State.quiet = quiet


QUIET_HELP = "no progress on stderr (the result and errors still print)"


def _reporter(quiet: bool):

    return Reporter(quiet=quiet or _State.quiet)


@app.command()
def convert(
    format: Annotated[str, choice(Format, param_decls=("--format", "-f"), help="layout to write")],
    out: Annotated[
        Optional[str],
        typer.Option(
            help=f"store directory, or for {_listed(REMOTE, 'and')} a URL: s3://bucket/mnist.zarr "
            "[default: data/FORMAT]"
        ),
    ] = None,
    source: Annotated[
        Optional[str],
        typer.Option(
            help="what to convert: an ooc store (any layout, or a URL), the recipe's folder of "
            "per-sample CSV files, an image folder, an IDX folder, .npz, .npy (with --targets), "
            "HDF5, a Zarr group, a Parquet or CSV table [default: the bundled MNIST]"
        ),
    ] = None,
    targets: Annotated[
        Optional[Path],
        typer.Option(
            help="the recipe's targets CSV ('filename,label' rows), or the targets .npy of an x .npy"
        ),
    ] = None,
    x: Annotated[
        Optional[str],
        typer.Option(
            "--x",
            help="the samples' array in an .npz, HDF5 file or Zarr group; {split} stands for train and test "
            "[default: x_{split}; {split}/x]",
        ),
    ] = None,
    y: Annotated[
        Optional[str],
        typer.Option("--y", help="the targets' array, like --x [default: y_{split}; {split}/y]"),
    ] = None,
    target_column: Annotated[
        Optional[str],
        typer.Option(help="tables: the column that holds the target; the others are the features"),
    ] = None,
    target_kind: Annotated[
        Optional[str],
        choice(
            TargetKind,
            help="what the targets are [default: from the data: integers are classes, "
            "0/1 vectors one-hot or multi-label, floats regression]",
        ),
    ] = None,
    raw: Annotated[
        bool, typer.Option(help="uint8 images are read back as they are, not as float32 / 255")
    ] = False,
    color: Annotated[
        str,
        choice(
            Color,
            help="image folders: keep colour as the images have it (auto), or make every image rgb or gray",
        ),
    ] = "auto",
    test_fraction: Annotated[
        Optional[float],
        typer.Option(
            help="a source without a test split: the share of samples carved out as test "
            "(seeded, stratified for classes) [default: 0.1]"
        ),
    ] = None,
    order: Annotated[
        str,
        choice(
            Order,
            help="the order samples are written in: shuffle (seeded), source, or auto (shuffle a source that "
            "can "
            "be read in any order)",
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="seed of the write-time shuffle and of --test-fraction")] = 0,
    limit: Annotated[
        Optional[int], typer.Option(help="convert only the first N samples of each split")
    ] = None,
    chunk_size: Annotated[
        Optional[int],
        typer.Option(help=f"samples per chunk (chunked layouts: {CHUNKED}; parquet: row groups)"),
    ] = None,
    shard_size: Annotated[
        Optional[int],
        typer.Option(
            help=f"samples per file ({', '.join(SHARDED)}) [default: {', '.join(map(str, SHARDED.values()))}]"
        ),
    ] = None,
    compression: Annotated[
        Optional[str],
        choice(
            Compression,
            help=COMPRESSION_HELP,
        ),
    ] = None,
    dtype: Annotated[
        Optional[str],
        typer.Option(
            help="pixels only: store uint8 (0-255, read as float32 / 255) or float32 (value / 255); "
            "other samples are stored in their own dtype"
        ),
    ] = None,
    delimiter: Annotated[
        Optional[str],
        choice(
            Delimiter,
            help="per-sample CSV files read (a recipe folder) or written (--format csv): comma, whitespace "
            "(np.savetxt's), tab or semicolon [default: detected from the first file; writing: whitespace]",
        ),
    ] = None,
    sample_shape: Annotated[
        Optional[str],
        typer.Option(help="tables: reshape each row's features to this shape, e.g. 28,28 or 32,32,3"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing store at --out")] = False,
    repeat: Annotated[
        int,
        typer.Option(
            help="write K copies of the train split, each after the first randomly shifted by up to 2 pixels "
            "(stores larger than the source)"
        ),
    ] = 1,
    size: Annotated[
        Optional[str],
        typer.Option(
            help="image folders: resize every image to N or HxW pixels, e.g. 28 or 32x32 [default: the first "
            "image's size, which all must have]"
        ),
    ] = None,
    storage_option: Annotated[
        Optional[list[str]], typer.Option("--storage-option", help=STORAGE_OPTION_HELP)
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(help=f"write with N local processes ({PARALLEL}): the same files as one process writes"),
    ] = 1,
    dask: Annotated[
        Optional[str],
        typer.Option(
            help="write with the workers of the Dask cluster at this scheduler address (tcp://host:8786); "
            "they must see --out at the same path"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
):
    """Convert a dataset (default: the bundled MNIST) to an on-disk layout; run again, it resumes an interrupted
    conversion."""

    out = _location(out, storage_option) if out else DATA_DIR / format
    if format in FORMATS and get_format(format).OPTIONS.needs_tensorflow:
        import_tensorflow_quietly(needed=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C: resumable, one line
    try:
        with _reporter(quiet) as reporter:
            reading = SourceOptions(
                targets=targets,
                x=x,
                y=y,
                target_column=target_column,
                target_kind=target_kind,
                raw=raw,
                color=color,
                test_fraction=test_fraction,
                order=order,
                seed=seed,
                delimiter=delimiter,
                sample_shape=parse_shape(sample_shape),
            )
            manifest = run_convert(
                out,
                format=format,
                source=source,
                limit=limit,
                chunk_size=chunk_size,
                shard_size=shard_size,
                compression=compression,
                dtype=dtype,
                delimiter=delimiter,
                overwrite=overwrite,
                repeat=repeat,
                size=parse_size(size),
                jobs=jobs,
                dask=dask,
                progress=reporter.conversion(),
                source_options=reading,
            )
    except KeyboardInterrupt as interrupted:
        message = (
            str(interrupted)
            if isinstance(interrupted, ConversionInterrupted)
            else f"{out} may be incomplete; re-run the same command to resume, or pass --overwrite to start "
            "over"
        )
        print(f"ooc: interrupted: {message}", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    for note in manifest.get("notes", []):
        print(note)
    counts = ", ".join(f"{split} {info['count']}" for split, info in manifest["splits"].items())
    kept = ", ".join(f"{split} {n}" for split, n in manifest.get("resumed", {}).items())
    print(
        f"wrote {format} store {out} ({counts}) in {manifest['conversion_seconds']:.1f} s "
        f"({_conversion_rate(out, manifest)})" + (f", resuming with {kept} samples kept" if kept else "")
    )


def _conversion_rate(out, manifest: dict) -> str:
    """``5,321 samples/s, 4.2 MB/s``: the samples this run wrote, and its share of the store's bytes."""

    total = sum(info["count"] for info in manifest["splits"].values())
    written = total - sum(manifest.get("resumed", {}).values())
    try:
        nbytes = disk_usage(out)[0] * written / max(total, 1)
    except OSError:
        nbytes = None
    return rate_text(written, manifest["conversion_seconds"], "samples", nbytes)


def _location(path: str, storage_option: list[str] | None):
    """A local path, or a URL carrying its storage options (``ooc.remote``)."""

    return location(path, parse_storage_options(storage_option))


def _interrupt(signum, frame):
    _State.signal = signum
    raise KeyboardInterrupt


@app.command()
def adopt(
    path: Annotated[
        Path, typer.Argument(help="the recipe's folder: train/ (and test/) with one CSV file per sample")
    ],
    targets: Annotated[
        Optional[Path],
        typer.Option(
            help="the targets CSV of train/ ('filename,label' or 'index,label' rows, or one column of labels; "
            "a header is allowed) [default: PATH/train_target.csv or PATH/target.csv]"
        ),
    ] = None,
    test_fraction: Annotated[
        Optional[float],
        typer.Option(
            help="without test/: the share of train/ to use as test (seeded, stratified) [default: 0.1]"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of --test-fraction")] = 0,
    target_kind: Annotated[
        Optional[str], choice(TargetKind, help="what the targets are [default: from the data]")
    ] = None,
    delimiter: Annotated[
        Optional[str],
        choice(Delimiter, help="the sample files' dialect [default: detected from the first file]"),
    ] = None,
    dtype: Annotated[
        Optional[str],
        typer.Option(help="float32 (as np.loadtxt(file, dtype=np.float32) reads them) or float64"),
    ] = None,
):
    """Make a csv store of per-sample CSV files where they are: writes the manifest and checksums, no sample."""

    started = time.perf_counter()
    manifest = run_adopt(
        path,
        targets=targets,
        test_fraction=test_fraction,
        seed=seed,
        target_kind=target_kind,
        delimiter=delimiter,
        dtype=dtype,
    )
    for note in manifest.get("notes", []):
        print(note)
    counts = ", ".join(f"{split} {info['count']}" for split, info in manifest["splits"].items())
    print(
        f"adopted {path} as a csv store ({counts}; {len(manifest['checksums']['files'])} files checksummed) "
        "in "
        f"{time.perf_counter() - started:.1f} s: train with `ooc train --store csv --path {path}`"
    )


@app.command()
def verify(
    path: Annotated[str, typer.Argument(help="store directory or URL")],
    quick: Annotated[
        bool,
        typer.Option(
            help="check every file's size, but the checksums of a random 5 % of the files only (at least 3)"
        ),
    ] = False,
    storage_option: Annotated[
        Optional[list[str]], typer.Option("--storage-option", help=STORAGE_OPTION_HELP)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
):
    """Re-read every file of a store and check it against the manifest's checksums; exit 1 on any problem."""

    with _reporter(quiet) as reporter:
        report = run_verify(_location(path, storage_option), quick=quick, progress=reporter.verification())
    for line in report.problems:
        print(line)
    print(report.summary)
    if not report.ok:
        raise typer.Exit(1)


def _order_text(order: dict) -> str:
    kind = order.get("kind", "source")
    text = (
        f"shuffled when written (seed {order.get('seed')})"
        if kind == "shuffled"
        else "as the source lists them"
    )
    if order.get("from"):
        text += f", copied from {order['from']}"
    if order.get("grouped_by_class"):
        text += (
            "; WARNING: class by class, so chunk-shuffled batches draw from few classes: re-convert with "
            "--order shuffle "
            "or train with --shuffle global"
        )
    return text


@app.command()
def info(
    path: Annotated[str, typer.Argument(help="store directory or URL")],
    storage_option: Annotated[
        Optional[list[str]], typer.Option("--storage-option", help=STORAGE_OPTION_HELP)
    ] = None,
):
    """Show what is in a store: format, splits, counts, dtype, chunking, compression, size."""

    store = open_store(_location(path, storage_option))
    m = store.manifest
    apparent, allocated = disk_usage(store.path)
    total = sum(store.num_samples(s) for s in store.splits)
    opts = store.options
    print(f"path:        {store.path}")
    print(
        f"format:      {store.format_name} (manifest v{m['ooc_manifest_version']}, "
        f"{m.get('created_by', '?')})"
    )
    print("splits:      " + ", ".join(f"{s} {store.num_samples(s)}" for s in store.splits))
    samples, targets = store.schema.describe()
    print(f"samples:     {samples}")
    print(f"targets:     {targets}")
    print(f"order:       {_order_text(m.get('order', {}))}")
    for note in m.get("notes", []):
        print(f"note:        {note}")
    chunking = (
        f"{opts['chunk_size']} samples per chunk"
        if opts.get("chunk_size")
        else get_format(store.format_name).OPTIONS.chunking
    )
    print(f"chunking:    {chunking}")
    print(f"compression: {opts['compression']}")
    print(
        f"size:        {apparent:,} bytes ({allocated:,} on disk, {allocated / max(total, 1):,.0f} per "
        "sample)"
    )
    src = m.get("source", {})
    if src.get("adopted"):
        print(f"source:      the files themselves, adopted in place ({src.get('path')})")
    else:
        print(
            f"source:      {src.get('path')} (sha256 {src.get('sha256')}"
            + (f", limit {src['limit']}" if src.get("limit") else "")
            + ")"
        )
    sums = m.get("checksums")
    print(
        f"checksums:   {sums['algorithm']} of {len(sums['files'])} files (check them with `ooc verify "
        f"{path}`)"
        if sums
        else "checksums:   none (converted before ooc recorded them; re-convert with --overwrite to add them)"
    )


@app.command()
def train(
    store: Annotated[str, choice(Store, help="layout to read, or memory (the in-memory baseline)")],
    path: Annotated[
        Optional[str],
        typer.Option(
            help=f"store directory, or a URL of a {_listed(REMOTE, 'or')} store: s3://bucket/mnist.zarr "
            "[default: data/STORE]"
        ),
    ] = None,
    storage_option: Annotated[
        Optional[list[str]], typer.Option("--storage-option", help=STORAGE_OPTION_HELP)
    ] = None,
    cache_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="with a URL --path: keep the chunks fetched in this directory (new, empty, or an ooc cache), "
            "so that later epochs and runs read them from local disk"
        ),
    ] = None,
    cache_size: Annotated[
        Optional[str],
        typer.Option(
            help="with --cache-dir: the most it may hold (e.g. 2G, 512M); least recently used evicted"
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="passes over the training samples")] = 5,
    batch_size: Annotated[int, typer.Option(help="samples per batch")] = 128,
    model: Annotated[
        str,
        choice(
            Model,
            help=MODEL_HELP,
        ),
    ] = "lenet",
    seed: Annotated[int, typer.Option(help="seed of weights, validation split and batch order")] = 0,
    val_fraction: Annotated[
        float, typer.Option(help="share of train held out for validation (stratified)")
    ] = 0.1,
    learning_rate: Annotated[float, typer.Option(help="Adam's initial learning rate")] = 2e-3,
    lr_schedule: Annotated[
        str, choice(LrSchedule, help="cosine (decay to 0 over the run) or constant")
    ] = "cosine",
    shuffle: Annotated[
        str,
        choice(
            Shuffle,
            help="chunk (random chunks, then samples within a buffer of chunks: each chunk decoded once per "
            "epoch) or global (exact permutation), or none (in order)",
        ),
    ] = "chunk",
    loop: Annotated[
        str, choice(Loop, help="train_on_batch (ooc's loop) or fit (model.fit over a keras PyDataset)")
    ] = "train_on_batch",
    report: Annotated[Optional[Path], typer.Option(help="write a JSON report here")] = None,
    model_out: Annotated[
        Optional[Path], typer.Option(help="where to save the model [default: data/models/STORE-MODEL.keras]")
    ] = None,
    source: Annotated[Optional[Path], typer.Option(help="with --store memory: the .npz to load")] = None,
    limit: Annotated[
        Optional[int], typer.Option(help="with --store memory: first N samples of each split")
    ] = None,
    checkpoint_dir: Annotated[
        Optional[Path], typer.Option(help="where checkpoints go [default: data/checkpoints/STORE-MODEL]")
    ] = None,
    checkpoint_every: Annotated[
        Optional[int],
        typer.Option(
            help="checkpoint every N batches, and at every epoch end; 0: at epoch ends only [default: 200]"
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="continue the run checkpointed in --checkpoint-dir (same options), exactly as if it had not "
            "stopped"
        ),
    ] = False,
    on_error: Annotated[
        str,
        choice(
            OnError, help="a sample that cannot be read: raise (stop) or skip (drop it, count it per epoch)"
        ),
    ] = "raise",
):
    """Train a model on batches streamed from a store; the loss follows the store's target kind."""

    import_tensorflow_quietly()
    options = dict(
        epochs=epochs,
        batch_size=batch_size,
        model=model,
        seed=seed,
        val_fraction=val_fraction,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        shuffle=shuffle,
        loop=loop,
        on_error=on_error,
    )
    TrainConfig(**options)  # the options are refused before the store is opened (or loaded)
    if store == "memory":
        if cache_dir is not None or cache_size is not None:
            raise OptionError("--cache-dir and --cache-size apply to stores on object storage; drop them")
        data = MemoryStore.from_source(open_source(source), limit=limit)
    elif store in FORMATS:
        if source is not None or limit is not None:
            raise OocError(
                "--source and --limit go with --store memory; a store on disk was limited when converted"
            )
        if path is not None and not is_url(path) and Path(path).is_file():
            raise OptionError(
                f"--path {path} is a file; pass the store directory (what `ooc convert --out` wrote)"
            )
        data = open_store(
            _location(path, storage_option) if path else DATA_DIR / store,
            expect_format=store,
            cache_dir=cache_dir,
            cache_size=cache_size,
        )
    else:
        raise UnknownFormatError(f"unknown --store {store!r}: choose one of {FORMAT_CHOICES}, memory")
    name = (
        Path(model.partition(":")[2] or model).stem if (":" in model or model.endswith(".keras")) else model
    )
    _State.signal = None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C, with where to resume
    try:
        run_train(
            data,
            **options,
            report_path=report,
            model_path=model_out or DATA_DIR / "models" / f"{store}-{name}.keras",
            checkpoint_dir=checkpoint_dir or DATA_DIR / "checkpoints" / f"{store}-{name}",
            checkpoint_every=checkpoint_every,
            resume=resume,
            resume_command=resume_command(sys.argv[1:]),
        )
    except KeyboardInterrupt as interrupted:
        print(f"ooc: interrupted: {interrupted or 'training stopped'}", file=sys.stderr)
        raise typer.Exit(128 + (_State.signal or signal.SIGINT)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def bench(
    formats: Annotated[
        str, typer.Option(help=f"comma-separated layouts to measure [default: {FORMAT_CHOICES}]")
    ] = ",".join(FORMATS),
    variants: Annotated[
        bool, typer.Option(help="also measure notable options (compression, chunk size) beside the defaults")
    ] = True,
    out: Annotated[Path, typer.Option(help="folder for report.md, report.json and the plots")] = Path(
        "bench/results"
    ),
    stores_dir: Annotated[Path, typer.Option(help="where the measured stores are converted")] = DATA_DIR
    / "bench",
    source: Annotated[
        Optional[str],
        typer.Option(help="your data: any source `ooc convert --source` takes [default: the bundled MNIST]"),
    ] = None,
    targets: Annotated[
        Optional[Path], typer.Option(help="as for ooc convert: the recipe's targets CSV, or a targets .npy")
    ] = None,
    target_column: Annotated[
        Optional[str], typer.Option(help="as for ooc convert: a table's target column")
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="first N samples of each split")] = None,
    repeats: Annotated[int, typer.Option(help="repetitions of every timing (median, min, max reported)")] = 3,
    epochs: Annotated[int, typer.Option(help="training epochs per target; epochs 2..N are timed")] = 3,
    batch_size: Annotated[int, typer.Option(help="samples per batch, reading and training")] = 512,
    model: Annotated[
        str,
        choice(
            Model,
            help=MODEL_HELP,
        ),
    ] = "lenet",
    seed: Annotated[int, typer.Option(help="seed of shuffles and weights")] = 0,
    tradeoff: Annotated[
        bool, typer.Option(help="also train every store with the exact global shuffle (the trade-off table)")
    ] = True,
    scale_repeat: Annotated[
        int,
        typer.Option(
            help="also compare peak memory of training on Zarr at 1x and at Kx the samples (convert --repeat "
            "K); 0 skips"
        ),
    ] = 20,
    remote: Annotated[
        bool,
        typer.Option(
            help="also read the zarr and parquet stores from a local S3-compatible server (moto, started for "
            "the run) next to the disk"
        ),
    ] = False,
    memory_limit: Annotated[
        Optional[str],
        typer.Option(
            help="instead: read hdf5, npy and zarr out of core, in a child process under a memory cgroup of "
            "this size (e.g. 1G), over stores several times larger; writes out_of_core.md"
        ),
    ] = None,
    memory_limit_factor: Annotated[
        float, typer.Option(help="with --memory-limit: the train split's stored bytes over the limit")
    ] = 3.0,
    pass_seconds: Annotated[
        float, typer.Option(help="with --memory-limit: the most seconds each out-of-core pass reads")
    ] = 30.0,
    memory_limit_training: Annotated[
        bool,
        typer.Option(help="with --memory-limit: also time training from the store against in-memory arrays"),
    ] = True,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="no progress on stderr: neither the phases nor the findings as they come (the summary and "
            "report still print)",
        ),
    ] = False,
):
    """Measure every layout (size, conversion, reading, training, memory) and write a report."""
    # deferred: the benchmark (its report, plots) loads for `ooc bench` alone
    from ooc.benchmark.report import recommendation, summary_table
    from ooc.benchmark.run import run_bench

    import_tensorflow_quietly()
    command = "ooc " + " ".join(sys.argv[1:])
    started = time.perf_counter()
    shared = dict(  # what both kinds of run take
        out=out,
        stores_dir=stores_dir,
        source=source,
        source_options=SourceOptions(targets=targets, target_column=target_column),
        limit=limit,
        batch_size=batch_size,
        model=model,
        seed=seed,
        command=command,
    )
    if memory_limit is not None:
        # deferred: the benchmark loads for `ooc bench` alone
        from ooc.benchmark.report import out_of_core_section
        from ooc.benchmark.run import run_out_of_core_bench

        limit_bytes = parse_bytes(memory_limit)
        with _reporter(quiet) as reporter:
            report = run_out_of_core_bench(
                **shared,
                memory_limit=limit_bytes,
                formats=[f for f in formats.split(",") if f] if formats != ",".join(FORMATS) else None,
                factor=memory_limit_factor,
                pass_seconds=pass_seconds,
                training=memory_limit_training,
                progress=reporter.note,
            )
        print("\n".join(out_of_core_section(report["out_of_core"])).strip())
        print(f"\nreport: {out / 'out_of_core.md'}, {out / 'out_of_core.json'}")
        return
    with _reporter(quiet) as reporter:
        report = run_bench(
            **shared,
            formats=[f for f in formats.split(",") if f],
            variants=variants,
            repeats=repeats,
            epochs=epochs,
            tradeoff=tradeoff,
            scale_repeat=scale_repeat,
            remote=remote,
            progress=reporter.note,
            phase=reporter.phases(),
        )
    print(summary_table(report))
    print()
    print(recommendation(report))
    print(f"\nreport: {out / 'report.md'}, {out / 'report.json'}, plots in {out}")

    measured = [r.name for r in report["results"] if r.kind == "store"]
    print(
        f"benchmarked {len(measured)} stores ({', '.join(measured)}) on {report['config']['train_samples']:,} "
        "train samples "
        f"in {took(time.perf_counter() - started)}: {out / 'report.md'}"
    )


def main() -> None:
    try:
        app()
    except OocError as error:
        print(f"ooc: error: {error}", file=sys.stderr)
        sys.exit(1)
