"""Development tooling for adoptstream: local broker, monitoring stack, demo, traffic generator, test helpers.

Not part of the product: the `adoptstream` wheel does not contain it. `make install` installs it editable
from this checkout, with the `adoptstream-dev` command.
"""
