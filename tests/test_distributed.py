"""Several workers train one model: each reads its own part of every global batch, the step is all-reduced."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ooc
from ooc.distributed import cluster_size, tf_config
from ooc.errors import OptionError
from ooc.sampling import epoch_batches, split_sizes, worker_shard
from ooc.train import split_validation, train

from conftest import MNIST, ROOT

WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import ooc
    from ooc.train import train

    store, out, rank = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    seen, weights = [], []
    report = train(ooc.open_store(store), epochs=1, batch_size=64, seed=0, shuffle="global",
                   after_batch=lambda epoch, batch, indices: seen.append(np.asarray(indices)),
                   after_training=lambda net: weights.extend(net.get_weights()),
                   checkpoint_dir=out / f"ckpt{rank}", model_path=out / f"model{rank}.keras", report_path=out / f"report{rank}.json",
                   log=lambda line: print(line, flush=True))
    np.save(out / f"indices{rank}.npy", np.concatenate(seen))
    np.savez(out / f"weights{rank}.npz", *weights)
    (out / f"history{rank}.json").write_text(json.dumps({"history": report["history"], "distribution": report["distribution"],
                                                         "steps": len(seen), "test": report["test"]}))
""")

# One machine, two replicas: MirroredStrategy over two logical CPU devices (set up before TensorFlow
# starts, so in a process of its own). A run killed mid-epoch and resumed under the strategy.
MIRRORED = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import ooc
    from ooc.train import train

    store, out = ooc.open_store(sys.argv[1]), Path(sys.argv[2])
    run = dict(epochs=2, batch_size=64, seed=0, shuffle="global", checkpoint_every=2, log=lambda line: None,
               strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))

    def keep(name):
        return lambda net: np.savez(out / f"{name}.npz", *net.get_weights())

    def kill(epoch, batch, indices):
        if (epoch, batch) == (1, 3):
            raise KeyboardInterrupt

    full = train(store, **run, checkpoint_dir=out / "full", after_training=keep("full"))
    try:
        train(store, **run, checkpoint_dir=out / "ckpt", after_batch=kill)
    except KeyboardInterrupt:
        pass
    resumed = train(store, **run, checkpoint_dir=out / "ckpt", resume=True, after_training=keep("resumed"))
    # 360 samples in global batches of 359: the last holds one sample, so one replica's part is empty
    ragged = train(store, **{**run, "epochs": 1, "batch_size": 359}, after_training=keep("ragged"))
    (out / "runs.json").write_text(json.dumps({"full": full["history"], "resumed": resumed["history"], "ragged": ragged["history"],
                                               "distribution": full["distribution"], "resumed_at": resumed["checkpoint"]["resumed_at"]}))
""")

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def _npy_store(tmp_path):
    path = tmp_path / "npy"
    ooc.convert(path, format="npy", source=MNIST, limit=400)
    return path


def _single_process_weights(store, **options):
    """The same run without a strategy, in this process."""
    weights = []
    report = train(
        ooc.open_store(store),
        **{"seed": 0, "shuffle": "global", "batch_size": 64, **options},
        strategy=None,
        log=lambda line: None,
        after_training=lambda net: weights.extend(net.get_weights()),
    )
    return weights, report


def without_timing(history):
    return [
        {k: v for k, v in e.items() if k not in ("seconds", "cpu_seconds", "samples_per_second")}
        for e in history
    ]


def test_worker_shards_are_disjoint_complete_and_even():
    plan = epoch_batches(
        np.arange(1000, 1403), batch_size=64, shuffle="global", seed=1
    )  # 6 full batches, then 19
    for workers in (1, 2, 3, 5):
        shards = [worker_shard(plan, worker=k, workers=workers) for k in range(workers)]
        assert all(len(s) == len(plan) for s in shards)  # the same number of steps on every worker
        for b, batch in enumerate(plan):
            parts = [s[b] for s in shards]
            assert np.array_equal(np.concatenate(parts), batch)  # contiguous slices, in worker order
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
        union = np.concatenate([np.concatenate(s) for s in shards])
        assert len(union) == 403 and set(union.tolist()) == set(range(1000, 1403))
    assert split_sizes(19, 5) == [4, 4, 4, 4, 3] and split_sizes(2, 3) == [1, 1, 0]
    with pytest.raises(OptionError, match=r"worker must be in \[0, 2\), got 2"):
        worker_shard(plan, worker=2, workers=2)


def test_tf_config_parsing():
    assert tf_config({}) == {}
    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert cluster_size(tf_config({"TF_CONFIG": json.dumps(two)})) == 2
    assert cluster_size({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}}) == 2
    with pytest.raises(OptionError, match="TF_CONFIG is not JSON"):
        tf_config({"TF_CONFIG": "{cluster"})


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_one_model(tmp_path):
    store = _npy_store(tmp_path)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    try:
        for rank in range(2):
            env = {
                **os.environ,
                **QUIET_ENV,
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}
                ),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(store), str(tmp_path), str(rank)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"worker {rank} failed:\n{out[-4000:]}"

    weights = [np.load(tmp_path / f"weights{rank}.npz") for rank in range(2)]
    assert len(weights[0].files) == 10
    assert all(
        np.array_equal(weights[0][k], weights[1][k]) for k in weights[0].files
    )  # one model, trained together

    train_idx, _ = split_validation(ooc.open_store(store).labels("train"), val_fraction=0.1, seed=0)
    indices = [np.load(tmp_path / f"indices{rank}.npy") for rank in range(2)]
    assert not set(indices[0].tolist()) & set(indices[1].tolist())  # disjoint shards
    assert sorted(np.concatenate(indices).tolist()) == train_idx.tolist()  # together exactly one pass
    assert abs(len(indices[0]) - len(indices[1])) <= 1

    runs = [json.loads((tmp_path / f"history{rank}.json").read_text()) for rank in range(2)]
    assert runs[0]["steps"] == runs[1]["steps"] == -(-len(train_idx) // 64)  # 360 samples: 6 global batches
    assert (
        runs[0]["history"][0]["loss"] == runs[1]["history"][0]["loss"]
    )  # the global (all-reduced) loss, on both
    assert runs[0]["test"] == runs[1]["test"]
    assert runs[1]["distribution"] == {
        "strategy": "MultiWorkerMirroredStrategy",
        "worker": 1,
        "workers": 2,
        "replicas": 2,
    }
    # only the chief writes the model and the report; nobody checkpoints
    assert (tmp_path / "model0.keras").is_file() and (tmp_path / "report0.json").is_file()
    assert not (tmp_path / "model1.keras").exists() and not (tmp_path / "report1.json").exists()
    assert not (tmp_path / "ckpt0").exists() and not (tmp_path / "ckpt1").exists()

    # the same training as one process on the whole batches, up to the order of float sums
    single, report = _single_process_weights(store, epochs=1)
    assert len(single) == 10 and all(
        np.allclose(a, weights[0][k], rtol=0, atol=1e-5) for a, k in zip(single, weights[0].files)
    )
    assert runs[0]["history"][0]["loss"] == pytest.approx(report["history"][0]["loss"], rel=1e-5)


def test_mirrored_strategy_on_two_local_devices_and_resume(tmp_path):
    store = _npy_store(tmp_path)
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    result = subprocess.run(
        [sys.executable, str(script), str(store), str(tmp_path)],
        env={**os.environ, **QUIET_ENV},
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert runs["distribution"] == {"strategy": "MirroredStrategy", "worker": 0, "workers": 1, "replicas": 2}
    full, resumed = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert all(
        np.array_equal(full[k], resumed[k]) for k in full.files
    )  # resumed under the strategy: bit for bit
    assert runs["resumed_at"] == {"epochs_done": 1, "batches_done": 2}
    assert without_timing(runs["resumed"]) == without_timing(runs["full"])
    single, report = _single_process_weights(store, epochs=2)
    assert all(np.allclose(a, full[k], rtol=0, atol=1e-5) for a, k in zip(single, full.files))
    assert runs["full"][-1]["loss"] == pytest.approx(report["history"][-1]["loss"], rel=1e-5)
    single, report = _single_process_weights(store, epochs=1, batch_size=359)
    ragged = np.load(tmp_path / "ragged.npz")
    assert all(np.allclose(a, ragged[k], rtol=0, atol=1e-5) for a, k in zip(single, ragged.files))
    assert runs["ragged"][0]["loss"] == pytest.approx(report["history"][0]["loss"], rel=1e-5)


def test_fit_loop_and_resume_are_refused_under_several_workers():
    class TwoWorkers:  # what train() asks of a strategy before it builds anything
        num_replicas_in_sync = 2
        cluster_resolver = type(
            "Resolver",
            (),
            {
                "task_type": "worker",
                "task_id": 1,
                "cluster_spec": lambda self: type(
                    "Spec", (), {"as_dict": lambda self: {"worker": ["a:1", "b:2"]}}
                )(),
            },
        )()

    memory = ooc.MemoryStore(
        {
            "train": (np.zeros((20, 4, 4), np.uint8), np.arange(20) % 2),
            "test": (np.zeros((4, 4, 4), np.uint8), np.arange(4) % 2),
        }
    )
    with pytest.raises(
        OptionError, match=r"--loop fit does not run under TwoWorkers .*keras-team/keras#20585"
    ):
        train(memory, loop="fit", strategy=TwoWorkers(), log=lambda line: None)
    with pytest.raises(OptionError, match="--resume does not work with several workers"):
        train(memory, resume=True, checkpoint_dir="unused", strategy=TwoWorkers(), log=lambda line: None)
