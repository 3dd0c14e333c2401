"""Run folders: weights as plain arrays beside the config that rebuilds the model (nothing pickled).

    run.json        codec, model config, corpus (name, license, split), training args, sidl version
    model.npz       final state_dict as float32 arrays
    checkpoint.npz  model + optimizer + loop state for --resume (written atomically every epoch)
    metrics.json    what the trainer measured
"""
from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from sidl.realtime.codec.spec import Codec
from sidl.realtime.codec.files import NPZ_ERRORS, atomic_write, json_kind, read_json_object, write_json_atomic

from sidl.training.model import ModelConfig, TCNkWTA


def sidl_version() -> str:
    try:
        return version("sidl")
    except PackageNotFoundError:
        return "0+unknown"


def _atomic_savez(path: Path, arrays: dict) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def state_arrays(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def save_model(run_dir, model: TCNkWTA, codec: Codec, corpus: dict, args: dict) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Weights first: run.json, written last, marks a finished run whose config matches model.npz.
    _atomic_savez(run_dir / "model.npz", state_arrays(model))
    write_json_atomic(run_dir / "run.json", {"codec": codec.to_dict(), "model": model.cfg.to_dict(),
                                             "corpus": corpus, "args": args,
                                             "sidl_version": sidl_version()})


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"


def read_npz(path, what: str) -> dict:
    """Every array of an .npz written by sidl (nothing unpickled). A missing file raises
    FileNotFoundError; an empty, truncated or foreign one a one-line ValueError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a readable sidl {what}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except NPZ_ERRORS as e:
        raise ValueError(f"{path} is not a readable sidl {what} (empty or corrupt file)") from e


def read_run_info(run_dir) -> dict:
    """run.json as a dict whose ``corpus`` and ``args`` (when present) are objects."""
    path = Path(run_dir) / "run.json"
    try:
        info = read_json_object(path)
    except ValueError as e:
        raise ValueError(f"{run_dir}: not a readable training run ({e})") from e
    for key in ("corpus", "args"):
        if key in info and not isinstance(info[key], dict):
            raise ValueError(f"{path}: its {key!r} field must be an object, got {json_kind(info[key])}")
    name = info.get("corpus", {}).get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{path}: its corpus name must be a string, got {json_kind(name)}")
    return info


def load_model(run_dir) -> tuple[TCNkWTA, Codec, dict]:
    run_dir = Path(run_dir)
    for name in ("run.json", "model.npz"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir}: not a finished training run (no {name})")
    info = read_run_info(run_dir)
    try:
        model = TCNkWTA(ModelConfig.from_dict(info["model"]))
        codec = Codec.from_dict(info["codec"])
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        # a hand-edited run.json
        raise ValueError(f"{run_dir}: not a readable training run ({_one_line(e)})") from e
    arrays = read_npz(run_dir / "model.npz", "model")
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    except (RuntimeError, TypeError, ValueError) as e:
        # weights of another configuration
        raise ValueError(f"{run_dir}: not a readable training run (model.npz does not fit run.json's "
                         f"model: {_one_line(e)})") from e
    return model, codec, info


def save_checkpoint(run_dir, model, optimizer: torch.optim.Optimizer, loop_state: dict) -> None:
    """Everything --resume needs, as arrays + JSON; optimizer state flattened per parameter."""
    arrays = {f"model/{k}": v for k, v in state_arrays(model).items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, val in st.items():
            arrays[f"opt/{pid}/{name}"] = torch.as_tensor(val).cpu().numpy()
    arrays["loop"] = np.array(json.dumps(loop_state))
    _atomic_savez(Path(run_dir) / "checkpoint.npz", arrays)


def _settings(state: dict) -> dict:
    """The command-line settings a TCN-kWTA's weight shapes pin down: {option: value}."""
    out = {}
    if "decoder.weight" in state and len(state["decoder.weight"].shape) == 3:
        a, c, l = state["decoder.weight"].shape
        out.update({"--atoms": a, "--atom-length": l, "codec channels (--codec)": c})
    widths, i = [], 0
    while f"tcn.layers.{i}.weight" in state:
        widths.append(state[f"tcn.layers.{i}.weight"].shape[0])
        i += 1
    out["--tcn"] = ",".join(map(str, widths)) or "''"
    return out


def _mismatch(path: Path, saved: dict, wanted: dict) -> str:
    """Why a checkpoint's weights do not fit the model asked for, naming the settings that differ."""
    have, want = _settings(saved), _settings(wanted)
    diff = [f"{k} {have[k]} (this run asks for {want[k]})" for k in want if k in have and have[k] != want[k]]
    if diff:
        return f"{path} was trained with " + ", ".join(diff) + ": resume with the same settings"
    for k, v in wanted.items():
        if k not in saved or tuple(saved[k].shape) != tuple(v.shape):
            got = "missing" if k not in saved else f"shape {tuple(saved[k].shape)}"
            return (f"{path} does not fit the model asked for ({k}: {got}, expected {tuple(v.shape)}): "
                    f"resume with the settings it was trained with")
    return f"{path} does not fit the model asked for: resume with the settings it was trained with"


LOOP_KEYS = ("step", "epoch", "elapsed", "resampled", "rng", "k_rng", "usage", "history")


def read_checkpoint(run_dir, model) -> dict:
    """checkpoint.npz of ``run_dir`` as arrays, checked against ``model`` (readable, its weights of
    the same shapes, its loop state complete) before anything is loaded or trained."""
    path = Path(run_dir) / "checkpoint.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: nothing to resume")
    arrays = read_npz(path, "checkpoint")
    saved = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    wanted = model.state_dict()
    if set(saved) != set(wanted) or any(tuple(saved[k].shape) != tuple(v.shape) for k, v in wanted.items()):
        raise ValueError(_mismatch(path, saved, wanted))
    try:
        loop = json.loads(str(arrays["loop"]))
        missing = [k for k in LOOP_KEYS if k not in loop]
        for k in ("rng", "k_rng"):                     # a generator state numpy accepts
            np.random.default_rng().bit_generator.state = loop[k]
        ok = not missing and len(loop["usage"]) == model.cfg.n_atoms
        params = list(model.parameters())              # the optimizer's order
        for k, v in arrays.items():
            if k.startswith("opt/"):
                _, pid, name = k.split("/")
                p = params[int(pid)]
                ok = ok and (v.ndim == 0 or tuple(v.shape) == tuple(p.shape))
    except (KeyError, ValueError, TypeError, IndexError, RecursionError) as e:
        raise ValueError(f"{path} is not a readable sidl checkpoint (empty or corrupt file)") from e
    if not ok:
        raise ValueError(f"{path} is not a readable sidl checkpoint (incomplete or inconsistent state)")
    return arrays


def load_checkpoint(run_dir, model, optimizer, arrays: dict | None = None) -> dict:
    """Load a checkpoint (``arrays`` from ``read_checkpoint``, else read here) into model and optimizer;
    returns the loop state."""
    z = read_checkpoint(run_dir, model) if arrays is None else arrays
    model.load_state_dict({k[6:]: torch.from_numpy(v) for k, v in z.items() if k.startswith("model/")})
    opt = optimizer.state_dict()
    state: dict = {}
    for k, v in z.items():
        if k.startswith("opt/"):
            _, pid, name = k.split("/")
            val = torch.from_numpy(v)
            state.setdefault(int(pid), {})[name] = val if val.ndim else val.clone()
    opt["state"] = state
    try:
        optimizer.load_state_dict(opt)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        path = Path(run_dir) / "checkpoint.npz"
        raise ValueError(f"{path} is not a readable sidl checkpoint (optimizer state: {_one_line(e)})") from e
    return json.loads(str(z["loop"]))
