"""``python -m mrisr``: the same as the ``mrisr`` command."""

from mrisr.cli.app import main

if __name__ == "__main__":  # pragma: no cover
    main()
