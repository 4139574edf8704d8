"""SpiNNaker 2 devices besides the emulator: ``brian2`` (:mod:`.brian2_sim`, the
program rebuilt in Brian2) and ``spinnaker2`` (:mod:`.board`, a board through
py-spinnaker2, imported lazily)."""
