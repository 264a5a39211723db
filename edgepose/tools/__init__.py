"""The user's tools around the daemon: calibrate-fps, eval, models, view."""
