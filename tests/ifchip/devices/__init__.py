"""ifchip devices besides the emulator: ``script`` (:mod:`.script`)."""
