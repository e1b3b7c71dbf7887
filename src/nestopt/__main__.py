"""``python -m nestopt``: the ``nestopt`` command (see :mod:`nestopt.cli`)."""

from nestopt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
