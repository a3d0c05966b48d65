"""Video files through PyAV (FFmpeg's libraries): frames with their real
presentation times in, annotated frames out at those same times, H.264 in an
.mp4 that browsers play, with the input's audio carried over.

    with VideoReader(path) as reader, VideoWriter(out, reader) as writer:
        for item in reader:                  # fercli.sources.Item: frame, time_s, image (BGR), pts
            writer.write(item, annotated_image)
            ...
        # the audio packets the reader met went to the writer as they came
"""
from __future__ import annotations

import logging
import threading
from array import array
from fractions import Fraction
from pathlib import Path

import numpy as np

from fercli.errors import reason
from fercli.sources import Item

# --codec -> (encoder, container)
CODECS = {"h264": ("libx264", ".mp4"), "hevc": ("libx265", ".mp4"), "mpeg4": ("mpeg4", ".mp4"), "mjpeg": ("mjpeg", ".avi")}
DEFAULT_CODEC = "h264"
# Containers and the audio codecs they take as they are; other audio is re-encoded (AUDIO_ENCODER).
AUDIO_COPY = {".mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}, ".avi": {"mp3", "ac3", "pcm_s16le"}}
AUDIO_ENCODER = {".mp4": "aac", ".avi": "mp3"}


def _quiet_ffmpeg() -> None:
    """FFmpeg's own warnings about a damaged file go nowhere: fercli says what happened in one sentence."""
    import av.logging

    av.logging.set_level(av.logging.PANIC)
    logging.getLogger("libav").setLevel(logging.CRITICAL)


class VideoReader:
    """Decodes a video file's frames in presentation order with their times, as
    Items. Audio packets met on the way are handed to `on_audio` (the writer)
    untouched. A packet that does not decode gives an Item with `image` None;
    a file that ends early stops there (`frames_expected` says what its header
    promised; after the frames, `cut_short` says whether bytes are missing at
    its end, `frames_note` why fewer frames came out when none are)."""

    def __init__(self, path: str | Path, relative: Path | None = None):
        import av

        _quiet_ffmpeg()
        try:
            self.container = av.open(str(path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a readable video ({reason(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise ValueError("no video stream in the file")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self.frames_expected = int(self.stream.frames or 0)
        self.on_audio = None
        self.error: str | None = None   # why decoding stopped early, if it did
        # What the demuxer met, the evidence for cut_short and frames_note:
        self.frames_read = 0            # Items given (frames decoded, and packets that did not decode)
        self.packets = 0                # whole video packets
        self.packet_pts = array("q")    # their presentation times, where known
        self.first_pts: int | None = None   # of the first frame decoded
        self.partial_packet = False     # the demuxer met the end of the file inside a packet
        self.data_end: int | None = None    # byte after the last packet of any stream, where the demuxer says
        self.file_size: int | None = getattr(self.container, "size", None)
        self.source, self.relative = str(path), relative or Path(Path(path).name)

    def __iter__(self):
        import av

        index = 0
        try:
            for packet in self.container.demux():   # every stream: where its packets end is evidence too
                self._note_packet(packet)
                if packet.stream is not self.stream and packet.stream is not self.audio:
                    continue
                if packet.stream is self.audio:
                    if packet.dts is not None and self.on_audio:
                        self.on_audio(packet)
                    continue
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    if packet.size == 0:
                        continue
                    pts = packet.pts
                    yield self._item(index, None, pts, "unreadable frame")
                    index += 1
                    continue
                for frame in decoded:
                    if self.first_pts is None:
                        self.first_pts = frame.pts
                    yield self._item(index, frame.to_ndarray(format="bgr24"), frame.pts)
                    index += 1
        except (av.FFmpegError, OSError) as exc:
            self.error = f"the file ends in damaged data after {index} frames ({reason(exc)})"

    def _note_packet(self, packet) -> None:
        if not packet.size:
            return
        if packet.pos is not None and packet.pos >= 0:
            self.data_end = max(self.data_end or 0, packet.pos + packet.size)
        if packet.is_corrupt:
            self.partial_packet = True
        elif packet.stream is self.stream:
            self.packets += 1
            if packet.pts is not None:
                self.packet_pts.append(packet.pts)

    @property
    def cut_short(self) -> str | None:
        """After the frames: why the file holds fewer frames than its header
        announces, when bytes are missing at its end: fewer whole video packets
        came out than the header counts, and the demuxer stopped at the end of
        the file (inside a packet, or with nothing after the last one, where a
        whole file keeps its index or trailer). None when no frame is missing,
        or what is missing never was in the file (see frames_note)."""
        expected = self.frames_expected
        if not expected or self.frames_read >= expected or self.packets >= expected:
            return None
        if not self.partial_packet and self.data_end is not None and self.file_size and self.data_end < self.file_size:
            return None   # the file goes on after its last frame: its header's count is wrong
        return (f"the video ends after {self.frames_read} of the {expected} frames its header announces "
                "(truncated or damaged)")

    @property
    def frames_note(self) -> str | None:
        """After the frames: why fewer frames came out than the header
        announces when the file is whole (the decoder dropped frames that
        refer to pictures before the stream's start, as players do, or the
        header's count is wrong); None when that is not the case."""
        expected, read = self.frames_expected, self.frames_read
        if not expected or read >= expected or self.error or self.cut_short:
            return None
        if self.packets < expected:
            return (f"its header announces {expected} frames but the file holds {self.packets} and is whole "
                    f"(the header's count is wrong); {read} read")
        dropped = self.packets - read
        leading = sum(1 for pts in self.packet_pts if pts < self.first_pts) if self.first_pts is not None else 0
        if leading >= dropped:
            return (f"the decoder dropped the stream's first {dropped} frames, as players do (they refer to "
                    f"pictures from before its start); {read} of the {expected} frames its header announces read")
        return (f"the decoder dropped {dropped} of the stream's {self.packets} frames, as players do (frames it "
                f"cannot show); {read} of the {expected} frames its header announces read")

    def _item(self, index: int, image, pts, error: str | None = None) -> Item:
        seconds = float(pts * self.time_base) if pts is not None else index / self.fps
        self.frames_read = index + 1
        return Item(self.source, self.relative, image, error, frame=index, time_s=seconds, pts=pts)

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ultrafast at CRF 23: veryfast-at-20's PSNR or more (40.0-41.1 dB) for a third less CPU to read and re-encode
# a clip, in files 3-4x larger (benchmarks/bench_video.py --presets)
X264_OPTIONS = {"crf": "23", "preset": "ultrafast"}


class VideoWriter:
    """Encodes annotated frames at the reader's frame times (same time base,
    same pts), H.264 yuv420p in an .mp4 with `+faststart` by default, and muxes
    the reader's audio: copied where the container takes the codec, else
    re-encoded. Frames of odd width or height get one black pixel row/column
    (H.264's 4:2:0 needs even sides). `x264`: libx264's options (X264_OPTIONS)."""

    def __init__(self, path: Path, reader: VideoReader | None = None, codec: str = DEFAULT_CODEC,
                 fps: float = 25.0, time_base: Fraction | None = None, x264: dict | None = None):
        import av

        encoder, suffix = CODECS[codec]
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"movflags": "+faststart"} if suffix == ".mp4" else {}
        self.container = av.open(str(path), "w", options=options)
        self.encoder, self.suffix, self.x264 = encoder, suffix, x264 or X264_OPTIONS
        self.time_base = (reader.time_base if reader else time_base) or Fraction(1, 1000)
        if encoder == "mpeg4" and self.time_base.denominator > 65535:  # the MPEG-4 Part 2 limit
            self.time_base = Fraction(1, 1000)
        self.own_pts = reader is None or self.time_base != reader.time_base
        self.fps = reader.fps if reader else fps
        self.video = self.audio = None
        self.audio_in = reader.audio if reader else None
        self.audio_copy = False
        self.pending_audio: list = []
        self.video_started = False
        self.last_pts = None
        self.lock = threading.RLock()   # the reader's thread hands over audio while frames are encoded
        if self.audio_in is not None:
            reader.on_audio = self.write_audio

    def _open_streams(self, width: int, height: int) -> None:
        """Video first, then the audio: both before the container writes its header."""
        stream = self.container.add_stream(self.encoder, rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p" if self.encoder != "mjpeg" else "yuvj420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if self.encoder == "libx264":
            stream.options = dict(self.x264)
        self.video = stream
        if self.audio_in is not None:
            source = self.audio_in.codec_context
            self.audio_copy = source.name in AUDIO_COPY.get(self.suffix, set())
            self.audio = (self.container.add_stream_from_template(self.audio_in) if self.audio_copy
                          else self.container.add_stream(AUDIO_ENCODER[self.suffix], rate=source.sample_rate or 44100))

    def write(self, item: Item, image: np.ndarray) -> None:
        """`image` (BGR, the frame's size) at `item`'s time."""
        import av

        height, width = image.shape[:2]
        if self.video is None:
            with self.lock:
                self._open_streams(width, height)
        if width % 2 or height % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)))
        if self.video.pix_fmt == "yuv420p":   # OpenCV's conversion (BT.601, video range): a fifth of FFmpeg's time
            import cv2

            out = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        else:
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        pts = round(item.time_s / self.time_base) if self.own_pts or item.pts is None else item.pts
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1  # a repeated timestamp would stop the encoder
        self.last_pts = pts
        out.pts, out.time_base = pts, self.time_base
        packets = self.video.encode(out)
        with self.lock:
            self._mux(packets)

    def write_audio(self, packet) -> None:
        with self.lock:
            self._write_audio(packet)

    def _write_audio(self, packet) -> None:
        if not self.video_started or self.audio is None:  # the MP4 muxer takes no packet before the video's first one
            self.pending_audio.append(packet)
            return
        if self.audio_copy:
            packet.stream = self.audio
            self.container.mux(packet)
            return
        import av

        try:
            frames = packet.decode()
        except av.FFmpegError:
            return
        for frame in frames:
            frame.pts = None
            self.container.mux(self.audio.encode(frame))

    def _mux(self, packets) -> None:
        if not packets:
            return
        self.container.mux(packets)
        if not self.video_started:  # the audio that waited for the first video packet follows it
            self.video_started = True
            pending, self.pending_audio = self.pending_audio, []
            for packet in pending:
                self._write_audio(packet)

    def close(self) -> None:
        with self.lock:
            if self.video is None:  # no frame came: nothing to write
                self.container.close()
                self.path.unlink(missing_ok=True)
                return
            self._mux(self.video.encode(None))
            if self.audio is not None and not self.audio_copy:
                self.container.mux(self.audio.encode(None))
            self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
