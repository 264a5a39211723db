"""Image dimensions from the file header, and decoding bounded by a pixel limit.

A 20000x20000 JPEG is 15 MB on disk and 1.2 GB as a BGR array; OpenCV allocates the array as soon
as it has read the header.  :func:`decode_bounded` reads the size from the header first (JPEG, PNG,
BMP, WebP, TIFF, PPM/PGM: the formats edgepose takes as images) and then

* decodes an image of at most ``limit`` pixels as it is;
* decodes a larger JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's scaled decoding, so the full-size
  array never exists), the first of these within the limit;
* refuses anything else (a larger image of another format, a JPEG still over the limit at 1/8, a
  header it cannot read) with :class:`ImageTooLarge` or :class:`ImageUnreadable`.
"""

from __future__ import annotations

import logging
import struct
from typing import Optional, Tuple, Union

import cv2
import numpy as np

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 24_000_000  # 24 MP (e.g. 6000x4000), 72 MB as BGR; the models see 192x192 anyway
HEADER_BYTES = 1 << 18  # enough for a JPEG's SOF behind a large EXIF block (APP1 is at most 64 KB)
_REDUCED = ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))


class ImageRefused(ValueError):
    """An image edgepose will not decode; ``str()`` is one line for the log."""


class ImageTooLarge(ImageRefused):
    pass


class ImageUnreadable(ImageRefused):
    pass


def image_size(head: bytes) -> Optional[Tuple[str, int, int]]:
    """(format, width, height) from the first bytes of an image file, or None when the header is not
    one of JPEG, PNG, BMP, WebP, TIFF, PPM/PGM (or is cut short)."""
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            w, h = struct.unpack(">II", head[16:24])
            return "png", w, h
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(head)
        if head[:2] == b"BM":
            w, h = struct.unpack("<ii", head[18:26])
            return "bmp", abs(w), abs(h)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(head)
        if head[:1] == b"P" and head[1:2] in b"123456":
            return _pnm_size(head)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _jpeg_size(b: bytes) -> Optional[Tuple[str, int, int]]:
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        length = struct.unpack(">H", b[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            h, w = struct.unpack(">HH", b[i + 5:i + 9])
            return "jpeg", w, h
        i += 2 + length
    return None


def _webp_size(b: bytes) -> Optional[Tuple[str, int, int]]:
    chunk = b[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return "webp", w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return "webp", w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(b[21:25], "little")
        return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _tiff_size(b: bytes) -> Optional[Tuple[str, int, int]]:
    e = "<" if b[:2] == b"II" else ">"
    ifd = struct.unpack(e + "I", b[4:8])[0]
    count = struct.unpack(e + "H", b[ifd:ifd + 2])[0]
    found = {}
    for k in range(count):
        tag, typ = struct.unpack(e + "HH", b[ifd + 2 + 12 * k:ifd + 6 + 12 * k])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            at = ifd + 10 + 12 * k
            found[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), b[at:at + (2 if typ == 3 else 4)])[0]
    if 256 in found and 257 in found:
        return "tiff", found[256], found[257]
    return None


def _pnm_size(b: bytes) -> Optional[Tuple[str, int, int]]:
    words = []
    for line in b[2:512].split(b"\n"):
        words += line.split(b"#")[0].split()
        if len(words) >= 2:
            return "pnm", int(words[0]), int(words[1])
    return None


def decode_bounded(data: Optional[bytes] = None, path: Optional[str] = None, name: str = "",
                   limit: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image (``data`` in memory, or the file at ``path``) as BGR, within ``limit`` pixels
    (see the module's docstring); ``name`` is how errors and the downscale note call it.  Raises
    :class:`ImageTooLarge` or :class:`ImageUnreadable` (ValueErrors) with a one-line message; an
    unreadable file is an OSError."""
    name = name or str(path)
    source: Union[str, bytes]
    if path is not None:
        source = path
        with open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    elif data is not None:
        source = data
        head = bytes(data[:HEADER_BYTES])
    else:
        raise TypeError("decode_bounded needs data or a path")
    size = image_size(head)
    if size is None:
        raise ImageUnreadable(f"{name} is not an image edgepose reads (JPEG, PNG, BMP, WebP, TIFF, PPM/PGM)")
    fmt, w, h = size
    flag = cv2.IMREAD_COLOR
    if w * h > limit:
        factor = next(((f, fl) for f, fl in _REDUCED if (w // f) * (h // f) <= limit), None) if fmt == "jpeg" else None
        if factor is None:
            how = "even at 1/8 of its size" if fmt == "jpeg" else "and only JPEGs are decoded at a reduced size"
            raise ImageTooLarge(f"{name} is {w}x{h} pixels, over the limit of {limit / 1e6:g} megapixels "
                                f"{how}: refused")
        log.info("%s is %dx%d pixels, over the limit of %g megapixels: decoding it at 1/%d of its size",
                 name, w, h, limit / 1e6, factor[0])
        flag = factor[1]
    if isinstance(source, str):
        img = cv2.imread(source, flag)
    else:
        img = cv2.imdecode(np.frombuffer(source, np.uint8), flag)
    if img is None:
        raise ImageUnreadable(f"{name} is not an image OpenCV can decode")
    return img
