"""Drawing poses for people: skeleton, keypoint scores, FPS and latency.

Shared by the live preview page (``edgepose run --preview``) and the MQTT
viewer (``edgepose view``).  Everything works on schema-v1 payload dicts
(keypoints in frame pixels, pixel k covering [k, k+1)), so a pose received
over MQTT draws exactly like one fresh from the pipeline.

:func:`render` never modifies the image it is given: it draws on a (possibly
downscaled) copy.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepose.core.pose import skeleton_for

# BGR colours: the person's right side orange, left side cyan, centre line white
RIGHT = (0, 140, 255)
LEFT = (255, 200, 0)
CENTRE = (235, 235, 235)
LOW = (90, 90, 90)  # keypoints under the threshold
_SHIFT = 4  # cv2 fixed-point bits: draw at 1/16 pixel
_ONE = 1 << _SHIFT


def keypoint_arrays(payload: Mapping[str, Any]) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """(names, xy (K,2) frame px, scores (K,)) from a schema-v1 payload."""
    kps = payload.get("keypoints") or []
    names = [str(k.get("name", i)) for i, k in enumerate(kps)]
    xy = np.array([[float(k.get("x", 0.0)), float(k.get("y", 0.0))] for k in kps], np.float64).reshape(-1, 2)
    scores = np.array([float(k.get("score", 0.0)) for k in kps], np.float64)
    return names, xy, scores


def side_colour(name: str) -> Tuple[int, int, int]:
    if name.startswith("right"):
        return RIGHT
    if name.startswith("left"):
        return LEFT
    return CENTRE


def _fixed(x: float, y: float, scale: float) -> Tuple[int, int]:
    """Continuous frame coordinates -> cv2 fixed-point pixel centres (pixel k's centre is k + 0.5)."""
    return int(round((x * scale - 0.5) * _ONE)), int(round((y * scale - 0.5) * _ONE))


def draw_skeleton(img: np.ndarray, names: Sequence[str], xy: np.ndarray, scores: np.ndarray,
                  skeleton: Optional[Sequence[Sequence[int]]] = None, threshold: float = 0.2,
                  scale: float = 1.0, found: Optional[np.ndarray] = None) -> None:
    """Bones between keypoints that both reach ``threshold``; every keypoint as a dot (grey below it).

    ``skeleton``: the bones (None: those of the layout ``names`` is, :func:`edgepose.core.pose.skeleton_for`);
    ``found``: which keypoints exist (a person of a multi-person model has only some; default all)."""
    k = len(names)
    skeleton = skeleton_for(names) if skeleton is None else skeleton
    thick = max(1, int(round(min(img.shape[:2]) / 160)))
    for a, b in skeleton:
        if not (0 <= a < k and 0 <= b < k) or scores[a] < threshold or scores[b] < threshold:
            continue
        colour = side_colour(names[b]) if side_colour(names[b]) != CENTRE else side_colour(names[a])
        cv2.line(img, _fixed(xy[a][0], xy[a][1], scale), _fixed(xy[b][0], xy[b][1], scale), colour, thick + 1,
                 cv2.LINE_AA, _SHIFT)
    for i in range(k):
        if found is not None and not found[i]:
            continue
        colour = side_colour(names[i]) if scores[i] >= threshold else LOW
        cv2.circle(img, _fixed(xy[i][0], xy[i][1], scale), (thick + 2) * _ONE, colour, -1, cv2.LINE_AA, _SHIFT)


def draw_scores(img: np.ndarray, xy: np.ndarray, scores: np.ndarray, scale: float = 1.0) -> None:
    """Each keypoint's score (two decimals) beside it."""
    size = max(0.35, min(img.shape[:2]) / 1200)
    for (x, y), s in zip(xy, scores):
        org = (int(x * scale) + 5, int(y * scale) - 5)
        _text(img, f"{s:.2f}", org, size, 1)


def _text(img: np.ndarray, text: str, org: Tuple[int, int], size: float, thick: int,
          colour: Tuple[int, int, int] = (255, 255, 255), box: bool = True) -> None:
    """Text at ``org`` (bottom left), on a dark box so it reads on any background.

    (No outline drawn with a thicker stroke: OpenCV 5 lays thick text out wider than thin text.)
    """
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, thick)
    # keep it inside the image (a keypoint may sit on the border or outside it)
    org = (min(max(2, org[0]), max(2, img.shape[1] - w - 2)), min(max(h + 2, org[1]), img.shape[0] - base))
    if box:
        roi = img[org[1] - h - 2:org[1] + base, org[0] - 2:org[0] + w + 2]
        roi[:] = (roi * 0.35).astype(np.uint8)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, colour, thick, cv2.LINE_AA)


def hud_lines(payload: Mapping[str, Any], fps: Optional[float]) -> List[str]:
    """The text block: FPS, latency and pose score of one payload."""
    lat = payload.get("latency_ms") or {}
    lines = []
    head = f"{fps:.1f} fps" if fps is not None else "-- fps"
    if "infer" in lat:
        head += f"  infer {lat['infer']:.1f} ms"
    if "total" in lat:
        head += f"  total {lat['total']:.0f} ms"
    lines.append(head)
    people = payload.get("people")
    seen = "person" if payload.get("present") else "no person"
    if isinstance(people, list):
        seen = f"{len(people)} {'person' if len(people) == 1 else 'people'}"
    lines.append(f"{seen}  score {float(payload.get('score', 0.0)):.2f}  #{payload.get('seq', '?')}")
    return lines


def draw_hud(img: np.ndarray, lines: Sequence[str]) -> None:
    """Text lines on a dark band at the top left."""
    size = max(0.45, min(img.shape[:2]) / 900)
    thick = 1 if size < 0.8 else 2
    (_, h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, size, thick)
    step = h + base + 4
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, size, thick)[0][0] for t in lines) + 12
    band = img[:step * len(lines) + 8, :min(width, img.shape[1])]
    band[:] = 24  # opaque: the text must read over anything drawn below it
    for i, t in enumerate(lines):
        _text(img, t, (6, 4 + step * (i + 1) - base), size, thick, box=False)


def fit_width(image: np.ndarray, max_width: int) -> Tuple[np.ndarray, float]:
    """A copy no wider than ``max_width`` (0 = any) and the scale applied to coordinates."""
    w = image.shape[1]
    if max_width and w > max_width:
        s = max_width / w
        return cv2.resize(image, (max_width, max(1, int(round(image.shape[0] * s)))),
                          interpolation=cv2.INTER_AREA), s
    return image.copy(), 1.0


def render(image: np.ndarray, payload: Mapping[str, Any], fps: Optional[float] = None,
           skeleton: Optional[Sequence[Sequence[int]]] = None, threshold: float = 0.2,
           max_width: int = 0, scores: bool = True) -> np.ndarray:
    """A new BGR image: ``image`` (scaled to ``max_width``) with the pose, scores and HUD drawn."""
    out, s = fit_width(image, max_width)
    names, xy, sc = keypoint_arrays(payload)
    if isinstance(payload.get("people"), list):
        draw_people(out, names, payload["people"], skeleton, threshold, s)
    elif len(names):
        draw_skeleton(out, names, xy, sc, skeleton, threshold, s)
        if scores:
            draw_scores(out, xy, sc, s)
    draw_hud(out, hud_lines(payload, fps))
    return out


def person_arrays(names: Sequence[str], person: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy (K,2), scores (K,), found (K,)) of one person of a v2 payload, in the order of ``names``."""
    kps = person.get("keypoints") or {}
    found = np.array([n in kps for n in names], bool)
    xy = np.array([[float(kps[n]["x"]), float(kps[n]["y"])] if n in kps else [0.0, 0.0] for n in names],
                  np.float64).reshape(-1, 2)
    scores = np.array([float(kps[n]["score"]) if n in kps else 0.0 for n in names], np.float64)
    return xy, scores, found


def draw_people(img: np.ndarray, names: Sequence[str], people: Sequence[Mapping[str, Any]],
                skeleton: Optional[Sequence[Sequence[int]]] = None, threshold: float = 0.2,
                scale: float = 1.0) -> None:
    """Everyone of a v2 payload (``names``: the model's keypoint order), each labelled with their id."""
    size = max(0.45, min(img.shape[:2]) / 900)
    for person in people:
        xy, sc, found = person_arrays(names, person)
        if not found.any():
            continue
        draw_skeleton(img, names, xy, sc, skeleton, threshold, scale, found)
        top = xy[found][np.argmin(xy[found][:, 1])]
        _text(img, f"#{person.get('id', '?')}", (int(top[0] * scale) - 10, int(top[1] * scale) - 12), size, 1)


def blank_canvas(width: int, height: int) -> np.ndarray:
    """A dark frame of the camera's size with a faint 10% grid (the viewer has no camera image)."""
    img = np.full((max(1, height), max(1, width), 3), 32, np.uint8)
    for i in range(1, 10):
        img[:, width * i // 10] = 48
        img[height * i // 10, :] = 48
    return img


def encode_jpeg(img: np.ndarray, quality: int = 75) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - only for empty images
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def skeleton_from_meta(meta: Optional[Mapping[str, Any]]) -> Optional[Tuple[Tuple[int, int], ...]]:
    """The bones a device announced in its retained meta document (None without one: :func:`render`
    then draws the bones of the layout the payload's keypoint names are)."""
    edges = (meta or {}).get("skeleton")
    try:
        return tuple((int(a), int(b)) for a, b in edges)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None

