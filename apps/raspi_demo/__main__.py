"""python -m apps.raspi_demo ... (see app.py)."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
