"""sam2_edge.runtimes.video: video in, masks out. The one pipeline that `sam2-edge track`, the
demo (apps/raspi_demo) and `sam2-edge bench` read frames, prompts files and write masks with.

* `sources`: what can be opened (video file, folder of images, camera index, /dev/videoN,
  rtsp/http URL, GStreamer pipeline, Pi camera) -> a `FrameSource` of BGR frames.
* `readers`: reading a source in order (`SequentialReader`) or newest-only on a thread
  (`LatestFrameGrabber`); `read_frames` for batch tools (RGB frames, count, fps); `Prefetcher`
  reads and pre-processes frame t+1 on a thread while the model runs on frame t.
* `prompts_file`: the prompts JSON schema and validator, ``--point/--box`` options, and how
  one frame's prompts are given to a tracker.
* `overlay`: object colours, mask drawing (outlines, ids) and the legend.
* `rle`: COCO run-length encoding of masks (pycocotools' format, numpy only).
* `summary`: what a tracking run saw: frames, FPS, objects present, objects lost.
* `writers`: the annotated video and the per-frame mask PNGs; `BackgroundWriter` writes them
  off the tracker's critical path.

numpy and OpenCV only: importing this package never imports torch.
"""

from .overlay import draw_legend, draw_masks, object_color
from .rle import decode as rle_decode
from .rle import encode as rle_encode
from .prompts_file import PromptError, PromptSpec, apply_prompts, load_prompts, parse_prompts, prompts_from_flags
from .readers import LatestFrameGrabber, Prefetcher, RGBFrames, SequentialReader, open_reader, read_frames
from .sources import (IMAGE_EXTENSIONS, CvSource, Frame, FrameSource, ImageFolderSource, PiCamera2Source,
                      SourceError, open_source, parse_source)
from .writers import (VIDEO_EXTENSIONS, BackgroundWriter, OutputError, VideoSink, check_video_path, is_masks_folder, result_masks,
                      safe_fps, write_masks)

__all__ = [
    # sources / readers
    "Frame", "FrameSource", "CvSource", "PiCamera2Source", "ImageFolderSource", "IMAGE_EXTENSIONS",
    "SourceError", "parse_source", "open_source", "SequentialReader", "LatestFrameGrabber", "open_reader",
    "read_frames", "RGBFrames", "Prefetcher",
    # prompts
    "PromptError", "PromptSpec", "parse_prompts", "load_prompts", "prompts_from_flags", "apply_prompts",
    # drawing / outputs
    "object_color", "draw_masks", "draw_legend", "rle_encode", "rle_decode", "OutputError", "VideoSink", "write_masks", "result_masks", "check_video_path",
    "is_masks_folder", "safe_fps", "VIDEO_EXTENSIONS", "BackgroundWriter",
]
