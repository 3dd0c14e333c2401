"""Presets: the format (``format``), where they live (``store``) and a loaded one (``model``).

    from . import load_preset
    preset = load_preset("drums-gmd")
"""
from .format import PresetError
from .model import Preset
from .store import load_preset

__all__ = ["Preset", "PresetError", "load_preset"]
