"""Run the real `sidl-live` command line on the stand-in model (until presets ship): python tests/live_standin.py ARGS.

``--preset drums`` (the default here) or ``--preset piano`` picks the stand-in's codec.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from standin import drum_model, piano_model  # noqa: E402

from sidl.realtime.live import cli as live  # noqa: E402


def load(name: str):
    models = {"drums": drum_model, "piano": piano_model, live.DEFAULT_PRESET: drum_model}
    if name not in models:
        raise live.UsageError(f"no stand-in preset {name!r} (have: {', '.join(models)})")
    return models[name]()


if __name__ == "__main__":
    live.main(sys.argv[1:], load=load)
