"""``python -m gemsearch.cli``: the same as the ``gemsearch`` command."""

from . import main

main(prog_name="gemsearch")  # usage errors name the command as users type it
