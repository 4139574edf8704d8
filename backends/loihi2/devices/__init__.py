"""Loihi 2 devices besides the emulator: ``lava`` (:mod:`.lava_device`, the
emitted module in Lava itself, in a child process; streaming through
:mod:`.lava_stream` / :mod:`.lava_stream_worker`)."""
