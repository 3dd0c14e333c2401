"""sidl on MIDI files: the file tools (reconstruct, simplify, clean, compress, generate, ...)."""
