"""``nmc serve`` for data centres: a model repository (:mod:`.repository`), a
device pool with a bounded wait queue (:mod:`.pool`), dynamic batching in the
emulators' batch slots (:mod:`.batching`), and the server that ties them to
the session protocol (:mod:`.server`)."""
