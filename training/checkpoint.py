"""Run folders: weights as plain arrays beside the config that rebuilds the model (nothing pickled).

    run.json        codec, model config, corpus (name, license, split), training args, sidl version
    model.npz       final state_dict as float32 arrays
    checkpoint.npz  model + optimizer + loop state for --resume (written atomically every epoch)
    metrics.json    what the trainer measured
"""
from __future__ import annotations

import json
import os
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from sidl.realtime.grid import Codec

from .model import ModelConfig, TCNkWTA


def sidl_version() -> str:
    try:
        return version("sidl")
    except PackageNotFoundError:
        return "0+unknown"


def _atomic_savez(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


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


def load_model(run_dir) -> tuple[TCNkWTA, Codec, dict]:
    run_dir = Path(run_dir)
    for name in ("run.json", "model.npz"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir}: not a finished training run (no {name})")
    try:
        info = json.loads((run_dir / "run.json").read_text())
        model = TCNkWTA(ModelConfig.from_dict(info["model"]))
        with np.load(run_dir / "model.npz", allow_pickle=False) as z:
            model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
        return model, Codec.from_dict(info["codec"]), info
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, zipfile.BadZipFile) as e:
        # a truncated model.npz, a hand-edited run.json, weights of another configuration
        first = " ".join(str(e).split())[:160]
        raise ValueError(f"{run_dir}: not a readable training run ({type(e).__name__}: {first})") from e


def save_checkpoint(run_dir, model, optimizer: torch.optim.Optimizer, loop_state: dict) -> None:
    """Everything --resume needs, as arrays + JSON; optimizer state flattened per parameter."""
    arrays = {f"model/{k}": v for k, v in state_arrays(model).items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, val in st.items():
            arrays[f"opt/{pid}/{name}"] = torch.as_tensor(val).cpu().numpy()
    arrays["loop"] = np.array(json.dumps(loop_state))
    _atomic_savez(Path(run_dir) / "checkpoint.npz", arrays)


def load_checkpoint(run_dir, model, optimizer) -> dict:
    path = Path(run_dir) / "checkpoint.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: nothing to resume")
    with np.load(path, allow_pickle=False) as z:
        model.load_state_dict({k[6:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("model/")})
        opt = optimizer.state_dict()
        state: dict = {}
        for k in z.files:
            if k.startswith("opt/"):
                _, pid, name = k.split("/")
                val = torch.from_numpy(z[k])
                state.setdefault(int(pid), {})[name] = val if val.ndim else val.clone()
        opt["state"] = state
        optimizer.load_state_dict(opt)
        return json.loads(str(z["loop"]))
