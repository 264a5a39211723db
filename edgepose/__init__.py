"""edgepose: a pose sensor daemon for Raspberry Pi and Jetson boards.

Data flows one way: source -> preprocess -> engine -> decode -> smooth -> publish.
"""

__version__ = "0.1.0"
