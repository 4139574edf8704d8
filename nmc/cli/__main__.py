"""``python -m nmc.cli``: the ``nmc`` command (:mod:`nmc.driver.cli`)."""
from nmc.driver.cli import main

main()
