"""``python -m esper``: the ``esper`` command (also what ``torchrun -m esper`` launches)."""

from esper.cli.main import main

if __name__ == "__main__":
    main()
