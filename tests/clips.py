"""Video fixtures made in the test: a phone-style clip (H.264 + AAC audio,
frames at irregular times) written with PyAV."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def phone_clip(path: Path, frames: int = 48, size=(320, 240), seed: int = 0, picture=None) -> list[float]:
    """Writes the clip; returns each frame's presentation time in seconds.
    `picture(i)` gives frame i (BGR), else a grey level that changes per frame."""
    import av

    rng = np.random.default_rng(seed)
    time_base = Fraction(1, 90000)
    times: list[float] = []
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.time_base = video.codec_context.time_base = time_base
        audio = out.add_stream("aac", rate=44100)
        seconds = 0.0
        for i in range(frames):
            image = picture(i) if picture else np.full((size[1], size[0], 3), (i * 5) % 250, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = round(seconds / time_base), time_base
            times.append(float(frame.pts * time_base))
            out.mux(video.encode(frame))
            seconds += rng.uniform(1 / 45, 1 / 18)  # variable frame timing, as phones record
        out.mux(video.encode(None))
        rate, samples = 44100, np.sin(2 * np.pi * 440 * np.arange(int(seconds * 44100)) / 44100).astype(np.float32) * 0.2
        for start in range(0, len(samples), 1024):
            chunk = samples[start:start + 1024]
            sound = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            sound.sample_rate, sound.pts = rate, start
            out.mux(audio.encode(sound))
        out.mux(audio.encode(None))
    return times


def video_streams(path: Path) -> dict:
    """What a player sees in a video file: codecs, frame times, audio packets."""
    import av

    with av.open(str(path)) as container:
        info = {"video_codec": container.streams.video[0].codec_context.name,
                "audio_codec": container.streams.audio[0].codec_context.name if container.streams.audio else None,
                "size": (container.streams.video[0].codec_context.width, container.streams.video[0].codec_context.height)}
        info["times"] = [float(frame.time) for frame in container.decode(video=0)]
    if info["audio_codec"]:
        with av.open(str(path)) as container:
            info["audio_packets"] = sum(1 for p in container.demux(container.streams.audio[0]) if p.size)
    return info
