"""``python -m octascope`` is the ``octascope`` command."""

from octascope.app.cli import main

if __name__ == "__main__":
    main()
