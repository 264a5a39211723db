"""Capture: where frames come from (cameras, streams, files, folders, snapshot URLs)."""
