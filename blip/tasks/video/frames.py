"""Video clips as frames: uniform sampling, decoding with PyAV (FFmpeg), and writing clips (the world's, tests').

Decoding streams the clip frame by frame and keeps only the sampled frames, so memory holds n frames whatever
the clip's length.
"""

from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image


class VideoError(ValueError):
    """A clip that cannot be decoded (or has no video stream, or no frames)."""


def uniform_indices(total: int, n: int) -> list[int]:
    """n frame indices spread evenly over `total` frames: the first of each of n equal segments, as the
    release's "uniform" sampling (a clip shorter than n frames repeats frames)."""
    return [int(i * total / n) for i in range(n)]


def _frame_count(container: av.container.InputContainer) -> int:
    """Frames in the first video stream: the header's count, else counted by demuxing (no decoding)."""
    stream = container.streams.video[0]
    if stream.frames:
        return int(stream.frames)
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count


def read_frames(data: bytes, n: int, name: str = "clip") -> list[Image.Image]:
    """n RGB frames sampled uniformly from an encoded clip (any container FFmpeg reads: MP4, AVI, WebM...)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise VideoError(f"{name}: no video stream")
            total = _frame_count(container)
            wanted = uniform_indices(total, n) if total else []
            frames: list[Image.Image] = []
            for i, frame in enumerate(container.decode(video=0)):
                frames += [frame.to_image()] * wanted.count(i)
                if len(frames) == n:
                    return frames
    except (av.error.FFmpegError, IndexError, ValueError) as e:
        if isinstance(e, VideoError):
            raise
        raise VideoError(f"{name}: not a decodable video ({e})") from None
    if not frames:
        raise VideoError(f"{name}: no decodable frames")
    # the header promised more frames than the stream holds: the sampled frames it reached, spread over n
    return [frames[i] for i in uniform_indices(len(frames), n)]


def encode_clip(frames: list[np.ndarray], fps: int = 8, container_format: str = "mp4",
                codec: str = "libx264") -> bytes:
    """Encoded clip bytes of RGB frames (H, W, 3 uint8; even sides): H.264 MP4 by default (MSVD's: "avi", "mpeg4")."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()
