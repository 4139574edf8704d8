"""Test-only recording stand-in for the vendor package ``pynn_brainscales``
(not the real thing: it records what a script builds and returns no spikes)."""
