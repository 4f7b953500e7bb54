"""``python -m papermail``: the same as the ``papermail`` command."""

from papermail.cli.main import main

main()
