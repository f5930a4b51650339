"""``python -m gemsearch.cli``: the same as the ``gemsearch`` command."""

from . import main

main()
