"""The simplify curve as a PNG. matplotlib is optional: imported only here, with a clear message."""
from __future__ import annotations

from pathlib import Path


def check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--curve needs matplotlib for its PNG (pip install matplotlib)") from None


def write_curve_png(path: Path, curve: list[dict], title: str) -> Path:
    """F1 and notes kept against N, two axes, written atomically."""
    check_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..codec.files import atomic_write
    n = [r["keep"] for r in curve]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(n, [r["f1"] for r in curve], "o-", color="tab:blue")
    ax.set_xlabel("atoms kept (N)")
    ax.set_ylabel("F1 against the input", color="tab:blue")
    ax.set_ylim(0, 1.02)
    ax2 = ax.twinx()
    ax2.plot(n, [r["notes"] for r in curve], "s--", color="tab:orange")
    ax2.set_ylabel("notes kept", color="tab:orange")
    ax.set_title(Path(title).name, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
