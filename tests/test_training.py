"""Training runs: data-parallel replicas and workers agree, SIGKILL + resume, NaN guard, export."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from d2im_tf.training.loop import RunSchedule, TrainingDiverged, run_training, training_checkpoint

from conftest import ROOT, TOY_CATEGORY, tiny_networks

pytestmark = pytest.mark.slow  # every test here trains in subprocesses

WORKER = ROOT / "tests" / "train_worker.py"


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _replica_weights(path):
    data = np.load(path)
    count = int(data["replicas"])
    names = sorted({key.split("/", 1)[1] for key in data.files if key != "replicas"})
    return count, {name: [data[f"{i}/{name}"] for i in range(count)] for name in names}


def test_mirrored_strategy_on_two_cpu_devices(toy_root, tmp_path):
    """Two replicas agree; with a weight average (``train.ema_decay``) the trained model holds it on both,
    and it is what the run's checkpoint restores."""
    from d2im_tf.training.run import load_model

    result = subprocess.run(
        [
            sys.executable,
            str(WORKER),
            str(toy_root),
            str(tmp_path / "run"),
            str(tmp_path / "w.npz"),
            "--devices",
            "2",
            "--set",
            "train.ema_decay=0.5",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    count, weights = _replica_weights(tmp_path / "w.npz")
    assert count == 2
    for name, (first, second) in weights.items():
        np.testing.assert_array_equal(first, second, err_msg=name)
    assert (tmp_path / "run" / "checkpoints" / "ckpt-3.index").exists()
    restored = load_model(tmp_path / "run", "sdf")
    raw = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints" / "ckpt-3"))
    trained = [weights[name][0] for name in sorted(weights)]  # in the order of model.trainable_weights
    assert len(trained) == len(restored.trainable_weights)
    for variable, value in zip(restored.trainable_weights, trained):  # paths differ between processes
        np.testing.assert_allclose(variable.numpy(), value, rtol=0, atol=1e-6, err_msg=variable.path)
    moved = 0
    for index, variable in enumerate(restored.weights):
        if variable.trainable:
            moved += not np.allclose(raw.get_tensor(f"weights/{index}/.ATTRIBUTES/VARIABLE_VALUE"), variable.numpy())
    assert moved > 0  # the averages differ from the last step's weights


def _free_ports(count):
    """Ports free now and outside the kernel's ephemeral range.

    A port from ``bind(0)`` lies in the ephemeral range, which the kernel also hands out as the source
    port of outgoing connections: between our release and the worker's bind, another worker's gRPC
    client could take it (the worker then dies on "address in use" and its peer sees "connection
    refused"). Ports below the range are only ever taken by an explicit bind.
    """
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    ports = []
    for port in np.random.default_rng().permutation(np.arange(max(1024, low - 12000), low)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", int(port)))
            except OSError:
                continue
        ports.append(int(port))
        if len(ports) == count:
            return ports
    raise RuntimeError("no free ports below the ephemeral range")


def _run_two_workers(toy_root, out):
    """Both workers of a MultiWorkerMirroredStrategy run into ``out``; ``(process, stderr)`` of each."""
    out.mkdir()
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(toy_root), str(out / "run"), str(out / f"w{index}.npz")],
                cwd=ROOT,
                env=_env(TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return [(process, process.communicate(timeout=600)[1]) for process in processes]


def test_multi_worker_strategy_two_processes(toy_root, tmp_path):
    out = tmp_path / "first"
    workers = _run_two_workers(toy_root, out)
    if any(process.returncode in (-signal.SIGABRT, -signal.SIGSEGV) for process, _ in workers):
        # Once in many runs (a full suite on a loaded machine), TensorFlow's native runtime crashed a
        # worker: aborted in glibc's heap check ("corrupted size vs. prev_size"), or, once, a segmentation
        # fault with nothing in the log. One more try in a new folder.
        out = tmp_path / "second"
        workers = _run_two_workers(toy_root, out)
    for index, (process, err) in enumerate(workers):
        assert process.returncode == 0, f"worker {index}: {err[-3000:]}"
    _, chief = _replica_weights(out / "w0.npz")
    _, other = _replica_weights(out / "w1.npz")
    assert chief.keys() == other.keys()
    for name in chief:
        np.testing.assert_array_equal(chief[name][0], other[name][0], err_msg=name)
    # Only the chief keeps checkpoints; the other worker's scratch copy is gone.
    assert (out / "run" / "checkpoints" / "ckpt-3.index").exists()
    assert not any((out / "run" / "scratch").glob("*/ckpt-*"))


def _train_command(toy_root, out, *extra):
    return [
        sys.executable,
        "-m",
        "d2im_tf.cli",
        "train",
        "--config",
        "configs/tiny.yaml",
        "--set",
        f"data.root={toy_root}",
        "--set",
        f"data.categories=['{TOY_CATEGORY}']",
        "--set",
        f"train.out_dir={out}",
        "--set",
        "train.checkpoint_every=2",
        "--no-progress",
        *extra,
    ]


def _logged_steps(log_dir):
    """{event file: steps at which train/loss was logged}; each run of the writer has its own file."""
    steps = {}
    for event_file in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        steps[event_file.name] = [
            event.step
            for event in tf.compat.v1.train.summary_iterator(str(event_file))
            for value in event.summary.value
            if value.tag == "train/loss"
        ]
    return steps


def test_sigkill_then_resume_a_run_started_from_given_weights(toy_root, model_dir, tmp_path):
    """``d2im train --set train.init_from=RUN`` (the 40-step run behind ``model_dir``) at a learning rate of
    1e-12, killed with SIGKILL after its 6th step and resumed: every checkpoint restores at its own step
    (the optimiser started afresh, not at the source's 40) with the source's trainable weights (to 1e-9),
    the loss curve continues, and ``--resume`` needs its own checkpoint only, not the source."""
    from d2im_tf.training.loop import load_run_config
    from d2im_tf.training.run import build_model, load_model

    source = model_dir.parent / "run"
    out = tmp_path / "run"
    long_run = [
        "--set",
        "train.epochs=50",
        "--set",
        "train.steps_per_epoch=4",
        "--no-export",
        "--set",
        "train.learning_rate=1e-12",
    ]
    process = subprocess.Popen(
        _train_command(toy_root, out, "--set", f"train.init_from={source}", *long_run),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def latest_step() -> int:  # the step of the checkpoint a resume would restore (0: none yet)
        latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
        return int(latest.rsplit("-", 1)[1]) if latest else 0

    deadline = time.time() + 300
    while latest_step() < 6:  # not the index file: the manager lists a checkpoint only after writing it
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step = latest_step()
    assert step >= 6
    before = _logged_steps(out / "logs")
    assert [steps[0] for steps in before.values()] == [1]

    short = [
        "--set",
        f"train.epochs={step // 4 + 2}",
        "--set",
        "train.steps_per_epoch=4",
        "--no-export",
        "--set",
        "train.learning_rate=1e-12",
        "--set",
        f"train.init_from={tmp_path / 'deleted'}",
    ]
    result = subprocess.run(
        _train_command(toy_root, out, "--resume", *short),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = (step // 4 + 2) * 4
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith(f"ckpt-{final}")
    # Every checkpoint still listed restores into a fresh model, at its own step: nothing is corrupt.
    model = build_model(load_run_config(out), "sdf")
    start = load_model(source, "sdf")
    state = tf.train.get_checkpoint_state(str(out / "checkpoints"))
    for path in state.all_model_checkpoint_paths:
        training_checkpoint(model).restore(path).assert_consumed()
        assert int(model.optimizer.iterations.numpy()) == int(path.rsplit("-", 1)[1])
        assert len(model.trainable_weights) == len(start.trainable_weights) > 0
        for weight, expected in zip(model.trainable_weights, start.trainable_weights):
            np.testing.assert_allclose(weight.numpy(), expected.numpy(), rtol=0, atol=1e-9, err_msg=weight.path)
    # The loss curve continues from the restored step instead of starting again at 1.
    (resumed,) = [steps for name, steps in _logged_steps(out / "logs").items() if name not in before]
    assert resumed == list(range(step + 1, final + 1))
    # Without --resume an existing run is refused, with a one-line error and exit code 2.
    refused = subprocess.run(
        _train_command(toy_root, out, "--no-export"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert refused.returncode == 2 and "pass --resume" in refused.stderr


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path):
    inputs = np.ones((8, 2), np.float32)
    targets = np.ones((8, 1), np.float32)
    targets[6] = np.nan  # the 4th batch of 2 has a NaN target: the loss becomes NaN at step 4

    def dataset(start):
        return tf.data.Dataset.from_tensor_slices((inputs, targets)).skip(start).batch(2)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    schedule = RunSchedule(global_batch=2, steps_per_epoch=4, epochs=1, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match=r"loss became NaN/Inf at step 4; .*ckpt-3"):
        run_training(model, dataset, schedule, tmp_path, progress=False)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")
    # The weights in memory are ruined; the kept checkpoint's are finite.
    assert not all(np.all(np.isfinite(w)) for w in model.get_weights())
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    training_checkpoint(fresh, with_optimizer=False).restore(str(tmp_path / "checkpoints" / "ckpt-3")).expect_partial()
    assert all(np.all(np.isfinite(w)) for w in fresh.get_weights())
    assert not np.allclose(fresh.get_weights()[0], 0.0)


def test_a_full_disk_stops_training_cleanly_and_the_run_resumes(tmp_path):
    """A checkpoint that cannot be written (the file-size limit makes TensorFlow's writer fail as a full
    disk does): the run stops with one line naming it and the checkpoint to resume from, leaves no
    ``*_temp`` folder, and ``--resume`` then completes it."""
    import resource

    from d2im_tf.training.callbacks import TrainingStopped

    inputs = np.ones((8, 256), np.float32)
    targets = np.ones((8, 1024), np.float32)

    def dataset(start):
        return tf.data.Dataset.from_tensor_slices((inputs, targets)).repeat().skip(start).batch(2)

    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024)])  # a 1 MB checkpoint
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    checkpoints = tmp_path / "checkpoints"
    run_training(model, dataset, RunSchedule(2, 2, 1, checkpoint_every=2), tmp_path, progress=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, hard))
    try:
        with pytest.raises(TrainingStopped) as stopped:
            run_training(
                model, dataset, RunSchedule(2, 2, 2, checkpoint_every=2), tmp_path, resume=True, progress=False
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(stopped.value) == (
        f"{checkpoints / 'ckpt-4'}: cannot write (File too large); training stopped; "
        f"resume from {checkpoints / 'ckpt-2'} with --resume once there is room"
    )
    assert not list(checkpoints.glob("*_temp*"))
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-2")
    resumed = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024)])
    resumed.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    resumed.optimizer.build(resumed.trainable_variables)
    assert (
        run_training(resumed, dataset, RunSchedule(2, 2, 2, checkpoint_every=2), tmp_path, resume=True, progress=False)
        == 4
    )
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-4")


def test_saved_model_runs_without_the_package(model_dir, tmp_path):
    """The session's ``d2im train --export`` run (conftest.model_dir): its export, loaded in a process that
    never imports d2im_tf, gives the SDF of the Keras model restored from the run's checkpoint."""
    out, export = model_dir.parent / "run", model_dir
    assert (export / "1" / "saved_model.pb").exists()
    # tiny.yaml previews every epoch: one strip (the toy set's one test shape) of five 128 px panels.
    from d2im_tf.data.disn_format import read_image

    assert read_image(out / "previews" / "epoch_0001.png").shape == (128, 5 * 128, 3)
    # Reference values from the Keras model restored from the same run.
    from d2im_tf.geometry import camera
    from d2im_tf.training.run import load_model

    model = load_model(out, "sdf")
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    points = rng.uniform(-0.5, 0.5, (2, 300, 3)).astype(np.float32)
    projection = np.stack([camera.projection_matrix(a, 20, 0.8, 32) for a in (30, 200)]).astype(np.float32)
    expected = model.predict_sdf(image, points, projection)["sdf"]
    np.savez(tmp_path / "inputs.npz", image=image, points=points, projection=projection)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"inputs = np.load({str(tmp_path / 'inputs.npz')!r})\n"
        f"model = tf.saved_model.load({str(export / '1')!r})\n"
        "out = model.signatures['serving_default'](image=tf.constant(inputs['image']),"
        " points=tf.constant(inputs['points']), projection=tf.constant(inputs['projection']))\n"
        f"np.save({str(tmp_path / 'served.npy')!r}, out['sdf'].numpy())\n"
        "assert not any(name.startswith('d2im_tf') for name in sys.modules)\n"
    )
    served = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert served.returncode == 0, served.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), expected, atol=1e-5)


def test_learning_rate_schedule_warms_up_and_decays():
    from d2im_tf.config import load_config
    from d2im_tf.training.run import FINAL_LR_FRACTION, learning_rate

    constant = load_config("configs/tiny.yaml", ["train.learning_rate=2e-3"])
    assert learning_rate(constant, 1000) == pytest.approx(2e-3)  # the paper: a constant rate
    cosine = load_config(
        "configs/tiny.yaml", ["train.learning_rate=2e-3", "train.lr_schedule=cosine", "train.warmup_steps=100"]
    )
    schedule = learning_rate(cosine, 1100)
    rate = {step: float(schedule(step)) for step in (0, 50, 100, 600, 1100)}
    assert rate[0] == pytest.approx(2e-3 * FINAL_LR_FRACTION)
    assert rate[50] == pytest.approx((2e-3 * FINAL_LR_FRACTION + 2e-3) / 2, rel=1e-5)  # linear warm-up
    assert rate[100] == pytest.approx(2e-3)
    # Cosine from the peak to 1% over the remaining 1000 steps: halfway, the mean of the two ends.
    assert rate[600] == pytest.approx(2e-3 * (1 + FINAL_LR_FRACTION) / 2, rel=1e-5)
    assert rate[1100] == pytest.approx(2e-3 * FINAL_LR_FRACTION, rel=1e-5)
    warm_only = load_config("configs/tiny.yaml", ["train.learning_rate=2e-3", "train.warmup_steps=10"])
    assert float(learning_rate(warm_only, 1000)(500)) == pytest.approx(2e-3)


def test_initial_weights_come_from_a_saved_model_or_a_run_folder(model_dir, tiny_export, tmp_path):
    """``train.init_from`` / ``camera.init_from``: every weight of a fresh network becomes the trained
    network's, read from an export bundling both networks or from a run folder's checkpoint; another
    network's weights, or an export without a camera network, are refused with the key named."""
    from d2im_tf.config import load_config
    from d2im_tf.errors import UserError
    from d2im_tf.training.loop import checkpoint_dir, save_run_config
    from d2im_tf.training.run import load_initial_weights

    exported = tiny_export("full", "none", with_camera=True)
    trained = {"sdf": exported.sdf, "camera": exported.camera}
    both = exported.path
    sdf_only = model_dir  # the session's tiny export, without a camera network
    run = tmp_path / "camera_run"
    tf.train.CheckpointManager(
        training_checkpoint(trained["camera"], with_optimizer=False), str(checkpoint_dir(run)), 1
    ).save()
    save_run_config(load_config(ROOT / "configs" / "tiny.yaml"), run)

    models = dict(zip(("sdf", "camera"), tiny_networks("full", "none", with_camera=True, seed=2)))
    initial = {network: model.get_weights() for network, model in models.items()}

    def fresh(network):  # the network with its own random weights again
        models[network].set_weights(initial[network])
        assert not all(np.array_equal(a, b) for a, b in zip(initial[network], trained[network].get_weights()))
        return models[network]

    for network, source in (("sdf", both.parent), ("camera", both), ("camera", run)):
        model = fresh(network)
        load_initial_weights(model, source, network)
        for weight, expected in zip(model.weights, trained[network].weights):
            np.testing.assert_array_equal(weight.numpy(), expected.numpy(), err_msg=f"{network} from {source}")
    with pytest.raises(UserError, match="camera.init_from: .* bundles no camera network"):
        load_initial_weights(fresh("camera"), sdf_only, "camera", "camera.init_from")
    with pytest.raises(UserError, match="weights do not match"):
        load_initial_weights(fresh("sdf"), run, "sdf", "train.init_from")
    with pytest.raises(UserError, match="train.init_from: .*not found"):
        load_initial_weights(fresh("sdf"), tmp_path / "missing", "sdf", "train.init_from")
