"""Entry point of ``python -m solo_lib``."""

from solo_lib.cli import main

if __name__ == "__main__":
    main()
