"""A dataset in the DAVIS folder layout:

    ROOT/JPEGImages/<res>/<video>/00000.jpg ...       frames (any names, sorted)
    ROOT/Annotations/<res>/<video>/00000.png ...      palette PNGs: pixel value = object id (0 = background)

`<res>` is ``480p`` (or ``Full-Resolution``). The first frame's annotation gives the objects
and their prompt masks; every annotated frame is scored. Optional ``ImageSets/2017/val.txt``
lists the videos (else every folder of JPEGImages/<res>).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from ..errors import InputError

IMAGE_EXT = (".jpg", ".jpeg", ".png")


def voc_palette(n: int = 256) -> np.ndarray:
    """The DAVIS / Pascal VOC palette: colour of index i (n x 3 RGB uint8)."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def read_ids(path) -> np.ndarray:
    """Object ids (H x W uint8) of a DAVIS annotation: the palette indices of a palette PNG (via
    Pillow when installed), else a grey-level PNG's values, else colours mapped through the
    DAVIS palette."""
    path = Path(path)
    try:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode == "P" or im.mode == "L":
                return np.array(im, dtype=np.uint8)
            rgb = np.array(im.convert("RGB"))
    except ImportError:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputError(f"cannot read annotation {path}; DAVIS annotations are PNG files") from None
        if img.ndim == 2:
            return img.astype(np.uint8)
        rgb = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    except OSError as e:
        raise InputError(f"cannot read annotation {path}: {e}") from None
    pal = voc_palette()
    key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    lut = {int(r) << 16 | int(g) << 8 | int(b): i for i, (r, g, b) in enumerate(pal)}
    out = np.zeros(key.shape, np.uint8)
    for k in np.unique(key):
        if int(k) not in lut:
            raise InputError(f"annotation {path} has colour #{int(k):06x}, not in the DAVIS palette; save it as a "
                             "palette (mode P) or grey-level PNG whose values are object ids")
        out[key == k] = lut[int(k)]
    return out


def write_ids(path, ids: np.ndarray) -> None:
    """Write object ids as a DAVIS palette PNG (Pillow), or a grey-level PNG without it."""
    try:
        from PIL import Image

        im = Image.fromarray(np.asarray(ids, np.uint8), mode="P")
        im.putpalette(voc_palette().ravel().tolist())
        im.save(path)
    except ImportError:
        cv2.imwrite(str(path), np.asarray(ids, np.uint8))


@dataclass
class Video:
    name: str
    frames: List[Path]
    annotations: Dict[int, Path]  # frame index -> annotation file

    def read_frame(self, i: int) -> np.ndarray:
        bgr = cv2.imread(str(self.frames[i]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise InputError(f"cannot decode frame {self.frames[i]}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def list_videos(root, resolution: str = "480p", videos: Optional[Sequence[str]] = None) -> List[Video]:
    """The videos of a DAVIS-layout dataset; InputError naming the expected layout."""
    root = Path(root)
    jpeg, ann = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    if not jpeg.is_dir() or not ann.is_dir():
        raise InputError(f"{str(root)!r} is not a DAVIS-layout dataset: expected {jpeg} and {ann} "
                         "(JPEGImages/<res>/<video>/*.jpg, Annotations/<res>/<video>/*.png)")
    if videos is None:
        listing = root / "ImageSets" / "2017" / "val.txt"
        names = ([v.strip() for v in listing.read_text().split() if v.strip()] if listing.is_file()
                 else sorted(p.name for p in jpeg.iterdir() if p.is_dir()))
    else:
        names = list(videos)
    out = []
    for name in names:
        fdir, adir = jpeg / name, ann / name
        if not fdir.is_dir() or not adir.is_dir():
            raise InputError(f"video {name!r} is missing from {jpeg} or {ann}")
        frames = sorted(p for p in fdir.iterdir() if p.suffix.lower() in IMAGE_EXT)
        if not frames:
            raise InputError(f"video {name!r} has no frames in {fdir}")
        stems = {p.stem: i for i, p in enumerate(frames)}
        anns = {stems[p.stem]: p for p in adir.iterdir() if p.suffix.lower() == ".png" and p.stem in stems}
        if 0 not in anns:
            raise InputError(f"video {name!r} has no annotation for its first frame {frames[0].name} in {adir}; "
                             "the first frame's masks are the prompts")
        out.append(Video(name, frames, anns))
    if not out:
        raise InputError(f"no videos in {jpeg}")
    return out


__all__ = ["voc_palette", "read_ids", "write_ids", "Video", "list_videos"]
