"""BrainScaleS-2 devices besides the emulator: ``hardware`` (:mod:`.hardware`,
the emitted PyNN script; pynn_brainscales imported lazily)."""
