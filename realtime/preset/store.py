"""Where presets live: find them by name, load one, install a folder or a ``.sidl`` archive.

Presets are looked up by name in ``$SIDL_PRESETS`` (else ``~/.local/share/sidl/presets``; where
``install_preset`` puts them) and then in the ``presets/`` folder shipped beside the package. A
single-file archive (``NAME.sidl``, a zip of ``NAME/``) is installed, never loaded in place.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .format import (ARCHIVE_SUFFIX, MAX_MEMBER_BYTES, NAME_PATTERN, PRESET_FILES,
                                         PresetError, check_name, read_manifest)
from .model import Preset, open_preset


def user_preset_dir() -> Path:
    """Where presets are installed: $SIDL_PRESETS, else $XDG_DATA_HOME/sidl/presets (~/.local/share)."""
    env = os.environ.get("SIDL_PRESETS")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "sidl" / "presets"


def shipped_preset_dir() -> Path:
    """``presets/`` beside the package: the repository's (editable install) or ``sidl/presets``."""
    return Path(__file__).resolve().parents[2] / "presets"


def preset_dirs() -> list[Path]:
    """Folders searched for presets, first match of a name wins."""
    return [user_preset_dir(), shipped_preset_dir()]


def find_presets() -> dict[str, Path]:
    """Every preset folder found, by name (a user's install shadows a shipped preset of that name)."""
    found: dict[str, Path] = {}
    for root in preset_dirs():
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if (sub.name not in found and NAME_PATTERN.match(sub.name) and (sub / "preset.json").is_file()):
                found[sub.name] = sub
    return found


def resolve(name_or_path) -> Path:
    """A preset folder from a name or a path, or a PresetError saying where it looked."""
    text = os.fspath(name_or_path)
    if not text.strip():
        raise PresetError(text, "no preset named (an empty name)")
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ARCHIVE_SUFFIX:
        raise PresetError(text, "is an archive: install it first (sidl presets install PATH)")
    if path.is_dir():
        return path
    if os.sep in text or "/" in text or not NAME_PATTERN.match(text):
        raise PresetError(text, "no such preset folder")
    found = find_presets().get(text)
    if found is None:
        where = ", ".join(str(d) for d in preset_dirs())
        raise PresetError(text, f"not found (looked in {where})")
    return found



def load_preset(name_or_path) -> Preset:
    """Find, verify (schema, codec, sha256 of every file) and open a preset for the live engine."""
    folder = resolve(name_or_path)
    return open_preset(folder, folder.name)



# ------------------------------------------------------------------------------------- installing


def safe_members(archive: zipfile.ZipFile, label: str) -> list[zipfile.ZipInfo]:
    """The archive's members, or a PresetError if any would land outside the extraction folder."""
    members = archive.infolist()
    for m in members:
        p = PurePosixPath(m.filename)
        if (m.filename.startswith(("/", "\\")) or "\\" in m.filename or ".." in p.parts
                or re.match(r"^[A-Za-z]:", m.filename)):
            raise PresetError(label, f"archive member {m.filename!r} escapes the preset folder")
        if stat.S_ISLNK(m.external_attr >> 16):
            raise PresetError(label, f"archive member {m.filename!r} is a symbolic link")
    return members


def _unpack(archive_path: Path, into: Path, label: str) -> Path:
    """Extract the one preset an archive holds: its preset.json and PRESET_FILES, nothing else,
    each at most ``MAX_MEMBER_BYTES`` (a zip can claim gigabytes in a few bytes)."""
    wanted = ("preset.json",) + PRESET_FILES
    try:
        with zipfile.ZipFile(archive_path) as z:
            members = [m for m in safe_members(z, label)
                       if not m.is_dir() and PurePosixPath(m.filename).name in wanted]
            manifests = [m for m in members if PurePosixPath(m.filename).name == "preset.json"]
            if len(manifests) != 1:
                raise PresetError(label, "archive holds no single preset folder with a preset.json")
            top = PurePosixPath(manifests[0].filename).parent
            into.mkdir(parents=True)
            for m in members:
                if PurePosixPath(m.filename).parent != top:
                    continue
                if m.file_size > MAX_MEMBER_BYTES:
                    raise PresetError(label, f"archive member {m.filename!r} is {m.file_size / 1e6:.0f} MB, "
                                             f"more than a preset file can be ({MAX_MEMBER_BYTES // 10**6} MB)")
                with z.open(m) as src, open(into / PurePosixPath(m.filename).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError) as e:
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
        raise PresetError(label, f"not a readable preset archive ({e.__class__.__name__}: {e})") from e
    return into


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target``: a folder already there is moved aside, put
    back if the move fails, and removed only once ``new`` is in place (export and install)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in a preset folder (what ``sidl presets`` and export report)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file())


def install_preset(path, dest: Path | None = None) -> Path:
    """Verify a preset folder or ``.sidl`` archive and copy it to ``dest`` (the user folder) by name.

    An installed preset of the same name is replaced (atomically: a temporary folder is renamed).
    """
    src = Path(os.fspath(path)).expanduser()
    label = src.name
    dest = Path(dest) if dest is not None else user_preset_dir()
    if not src.exists():
        raise PresetError(label, f"{src}: no such file or folder")
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".install-", dir=dest))
    try:
        folder = _unpack(src, work / "unpacked", label) if src.is_file() else src
        name = check_name(str(read_manifest(folder, label).get("name") or folder.name))
        open_preset(folder, label)                           # every check the engine makes
        staged = work / name
        staged.mkdir()
        for f in ("preset.json",) + PRESET_FILES:           # only what a preset holds
            shutil.copyfile(folder / f, staged / f)
        target = dest / name
        replace_folder(staged, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)
