"""Supervisor review: catalog of stored sessions, automatic QC, playback engine, access audit.

Qt-free; the widgets live in ``ui/review_window.py`` and ``ui/player_widget.py``.
"""
