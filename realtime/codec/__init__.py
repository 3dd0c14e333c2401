"""Codecs: MIDI notes <-> the arrays the model sees, shared by training, export, the file tools and live.

``spec`` (what an array's axes mean, and the table of facts per codec), ``convert`` (one entry point
per direction for every grid codec), ``notes`` (a note list as arrays), ``drums``, ``pianogrid`` and
``events`` (the codecs), ``midifile`` (reading and writing files), ``files`` (atomic writes, JSON and
npz reading with one-line errors).
"""
