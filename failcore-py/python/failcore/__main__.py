"""``python -m failcore``: the ``failcore`` command."""

from ._cli import main

if __name__ == "__main__":
    main()
