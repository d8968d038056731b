"""Entry point of the frozen station (PyInstaller bundle): the same CLI as the ``station`` script."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from station.cli import main

    sys.exit(main())
