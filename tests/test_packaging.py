"""The runtime stays torch-free, its imports point one way, and everything imports under `sidl`."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import sidl.realtime


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _every_realtime_module() -> list[str]:
    root = Path(sidl.realtime.__file__).parent
    return sorted(m.name for m in pkgutil.walk_packages([str(root)], "sidl.realtime."))


def test_the_runtime_never_imports_torch_nor_the_training_and_export_stages():
    """Loading every module of realtime/ (the live engine, its benchmark, the `sidl` command, the
    codecs, presets) pulls in neither torch nor anything from training/ or export/: the arrows
    point codec <- presets <- live / tools <- export <- training."""
    modules = _every_realtime_module()
    assert {"sidl.realtime.live.engine", "sidl.realtime.live.bench", "sidl.realtime.cli",
            "sidl.realtime.codec.events", "sidl.realtime.preset.store"} <= set(modules)
    mods = _modules_after("import " + ", ".join(modules))
    assert not {m for m in mods if m == "torch" or m.startswith("torch.")}
    assert not {m for m in mods if m.startswith(("sidl.training", "sidl.export"))}


def test_the_sidl_command_binds_training_commands_only_when_asked():
    r = subprocess.run([sys.executable, "-m", "sidl.realtime.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "evaluate" in r.stdout
    r = subprocess.run([sys.executable, "-m", "sidl.realtime.cli", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--atoms" in r.stdout


def test_packages_live_under_sidl_only():
    import sidl.export
    import sidl.training
    for mod in (sidl.realtime, sidl.training, sidl.export):
        assert mod.__name__.startswith("sidl.")
    r = subprocess.run([sys.executable, "-c", "import training"], capture_output=True, cwd="/")
    assert r.returncode != 0                       # no top-level `training` package in site-packages
