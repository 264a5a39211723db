"""edgepose: a pose sensor daemon for Raspberry Pi and Jetson boards.

Data flows one way: source -> preprocess -> engine -> decode -> smooth -> publish.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> type:
    """``from edgepose import PoseEstimator`` (imported on first use: ``import edgepose`` stays light)."""
    if name == "PoseEstimator":
        from edgepose.inference.estimator import PoseEstimator
        return PoseEstimator
    raise AttributeError(f"module 'edgepose' has no attribute {name!r}")


__all__ = ["PoseEstimator", "__version__"]
