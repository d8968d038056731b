"""Capture, masking hook, encoding and segment writing (no Qt, no UI)."""
