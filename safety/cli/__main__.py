"""``python -m safety.cli``: the command line (the board's follower starts it this way)."""

from safety.cli import main

main()
