"""The live path stays light: importing it (and the benchmark) never pulls in torch."""
import subprocess
import sys


def test_live_modules_import_no_torch():
    code = ("import sys; import sidl.realtime.live, sidl.realtime.bench, sidl.realtime.engine; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
