"""The runtime stays torch-free, and everything imports under the one name `sidl`."""
import subprocess
import sys


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_realtime_never_imports_torch():
    mods = _modules_after("import sidl.realtime, sidl.realtime.live, sidl.realtime.engine, "
                          "sidl.realtime.codecs, sidl.realtime.pianogrid, sidl.realtime.performance")
    assert "sidl.realtime.engine" in mods
    assert not {m for m in mods if m == "torch" or m.startswith("torch.")}


def test_packages_live_under_sidl_only():
    import sidl.export
    import sidl.realtime
    import sidl.training
    for mod in (sidl.realtime, sidl.training, sidl.export):
        assert mod.__name__.startswith("sidl.")
    r = subprocess.run([sys.executable, "-c", "import training"], capture_output=True, cwd="/")
    assert r.returncode != 0                       # no top-level `training` package in site-packages
