"""The corpora sidl knows by name, and the one function that opens a corpus or a user's folder.

``corpus`` holds what every corpus shares (pieces, the cache, sections); each named corpus module
(``groove``, ``pop909``, ``asap``) builds on it, and this registry sits above them all, so imports
point one way: registry -> corpus modules -> corpus.
"""
from __future__ import annotations

from sidl.realtime.codec.spec import Codec

from sidl.training import asap, groove, pop909
from sidl.training.corpus import Piece, folder_corpus, folder_split

# name -> (pieces of a split, licence); the name is what run.json and preset.json record
CORPORA = {
    "groove": (groove.groove_corpus, groove.LICENSE),
    "pop909": (pop909.pop909_corpus, pop909.LICENSE),
    "asap": (asap.asap_corpus, asap.LICENSE),
}


def load_corpus(name: str, codec: Codec, split: str | None) -> tuple[list[Piece], dict]:
    """Pieces of a named corpus (groove, pop909, asap) or a folder, and what a run records about it.

    The one place a corpus is chosen by name: training, export (the meter prior) and preset
    evaluation all call it, with the name a run wrote into run.json.
    """
    if not name:        # Path("") is the working directory: never scan it by accident
        raise ValueError("no corpus given (a run.json without a corpus name?)")
    if name in CORPORA:
        load, license_ = CORPORA[name]
        return load(split, codec), {"name": name, "license": license_}
    pieces = folder_corpus(name, codec)
    chosen = [p for i, p in enumerate(pieces) if split is None or folder_split(i, len(pieces)) == split]
    return chosen, {"name": str(name), "license": "user data"}
