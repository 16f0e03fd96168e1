"""``python -m octascope`` is the ``octascope`` command."""

from .cli import main

if __name__ == "__main__":
    main()
