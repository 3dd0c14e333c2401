"""sidl-live: clock, scheduler, ports and the engine that plays presets in time (``cli`` is the command)."""
