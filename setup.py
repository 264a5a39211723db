"""edgepose: turn a Raspberry Pi or Jetson with a camera into a pose sensor."""

import glob
import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "edgepose" / "__init__.py").read_text()).group(1)

setup(
    name="edgepose",
    version=version,
    description="Pose sensor daemon: camera -> quantized TFLite pose model -> 14 keypoints over MQTT",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["edgepose", "edgepose.*"]),
    # the model catalogue (no weights) is installed beside the package data
    data_files=[("share/edgepose/models", sorted(glob.glob("models/*.toml") + glob.glob("models/*.md"))),
                ("share/edgepose/deploy", sorted(glob.glob("deploy/*")))],
    install_requires=[
        # LiteRT: the maintained TFLite runtime (x86_64/aarch64, Python 3.10+)
        "ai-edge-litert>=1.2; python_version >= '3.10' and (platform_machine == 'x86_64' or "
        "platform_machine == 'aarch64' or platform_machine == 'AMD64' or platform_machine == 'arm64')",
        "numpy>=1.21",
        "opencv-python-headless>=4.5",
        "paho-mqtt>=2.0,<3",
        "tomli>=1.1; python_version < '3.11'",
        "tomlkit>=0.11",
    ],
    extras_require={
        # tflite-runtime 2.14 is the last release: Python <= 3.11 and numpy < 2
        "tflite": ["tflite-runtime==2.14.*; python_version < '3.12'", "numpy<2"],
        # the workstation converter for `edgepose models quantize`
        "convert": ["tensorflow-cpu>=2.15; platform_machine == 'x86_64'",
                    "tensorflow>=2.15; platform_machine != 'x86_64'"],
        "systemd": ["systemd-python>=234"],
        "test": ["pytest>=7", "selenium>=4.10", "jsonschema>=4", "scipy>=1.7", "hypothesis>=6",
                 "pycocotools>=2.0.6", "uv>=0.13"],  # selenium: preview
        # page tests; jsonschema: report schemas; scipy: upstream's own gaussian_filter, the reference for the
        # upstream decoder; hypothesis: fuzz tests of config files, source URIs, model files and of the messages
        # sub/view/preview read (tests/test_fuzz.py, tests/test_fuzz_messages.py); pycocotools: COCO keypoint AP of
        # multi-person models (edgepose eval); uv: installs the Home Assistant test virtualenv (tests/ha_server.py)
        # faster than pip on a machine with an empty cache (127 s against 171 s: docs/mqtt.md)
        # the checks .ci/run makes before the tests (configured in pyproject.toml)
        "dev": ["ruff>=0.6", "mypy>=1.10"],
    },
    entry_points={"console_scripts": ["edgepose=edgepose.cli:entry_point"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
