"""Video fixtures made in the test: a phone-style clip (H.264 + AAC audio,
frames at irregular times) written with PyAV."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def phone_clip(path: Path, frames: int = 48, size=(320, 240), seed: int = 0, picture=None,
               key_every: int | None = None) -> list[float]:
    """Writes the clip; returns each frame's presentation time in seconds.
    `picture(i)` gives frame i (BGR), else a grey level that changes per frame;
    `key_every`: a key frame every N frames (else the encoder's choice)."""
    import av

    rng = np.random.default_rng(seed)
    time_base = Fraction(1, 90000)
    times: list[float] = []
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.time_base = video.codec_context.time_base = time_base
        if key_every:
            video.options = {"g": str(key_every), "keyint_min": str(key_every), "sc_threshold": "0"}
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


def clip_starting_between_key_frames(path: Path, frames: int = 40, dropped: int = 3, **clip) -> int:
    """A phone clip (H.264 + AAC, `+faststart`: its header before the frames)
    whose video starts `dropped` frames before a key frame, as a clip cut from
    a longer recording does: those frames refer to pictures the file does not
    hold, so decoders drop them, while the header counts (and times) every
    packet. Returns the header's frame count."""
    import av

    key_every = 10
    whole = path.with_name(path.stem + ".whole.mp4")
    phone_clip(whole, frames=frames, key_every=key_every, **clip)
    first = key_every - dropped   # in decoding order: the packets before the second key frame
    with av.open(str(whole)) as source, av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (source.streams.video[0], source.streams.audio[0])}
        video_packets = 0
        for packet in source.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "video":
                video_packets += 1
                if video_packets <= first:
                    continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    whole.unlink()
    with av.open(str(path)) as written:
        return written.streams.video[0].frames


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
