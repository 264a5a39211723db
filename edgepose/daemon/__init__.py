"""The daemon: the `edgepose run` loop, systemd integration and board facts."""
