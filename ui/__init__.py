"""The seat's user interface. The only package that imports Qt (through :mod:`ui.qt`)."""
