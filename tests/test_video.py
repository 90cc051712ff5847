"""Video input and output: streaming, ranges, rotation, variable frame rate, images, H.264, bad input."""
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from data import sports2d_demo
from meshcap import InputError
from meshcap.video import VideoReader, VideoWriter, prefetched


def _pattern(i: int, h: int = 64, w: int = 96) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:16, :32] = 255  # a top-left marker shows orientation
    img[h // 2:, :, 1] = (i * 10) % 256  # frame number, readable after compression
    return img


def test_reader_streams_a_range_with_stride():
    r = VideoReader(sports2d_demo())
    assert (r.info.width, r.info.height, r.info.fps, r.info.num_frames) == (1768, 994, 30.0, 230)
    frames = list(VideoReader(sports2d_demo(), start=2.0, end=3.0, stride=2))
    assert [f.index for f in frames] == list(range(60, 90, 2))
    np.testing.assert_allclose([f.time for f in frames], np.arange(60, 90, 2) / 30.0, atol=1e-6)
    assert frames[0].image.shape == (994, 1768, 3) and frames[0].image.dtype == np.uint8
    assert len(VideoReader(sports2d_demo(), start=2.0, end=3.0, stride=2)) == len(frames)


def test_writer_encodes_h264_that_reads_back(tmp_path):
    out = tmp_path / "clip.mp4"
    with VideoWriter(out, fps=25) as w:
        for i in range(12):
            w.write(_pattern(i))
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    frames = list(VideoReader(out))
    assert len(frames) == 12
    np.testing.assert_allclose([f.time for f in frames], np.arange(12) / 25, atol=1e-3)
    for i, f in enumerate(frames):
        assert abs(int(f.image[48, 48, 1]) - (i * 10) % 256) <= 6
    # a failed write leaves the good file as it was
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(out, fps=25) as w:
            w.write(_pattern(0))
            raise RuntimeError("renderer crashed")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_rotation_metadata_is_applied(tmp_path):
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.set_display_rotation(90)  # counter-clockwise, as phones record portrait video
        for i in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(_pattern(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    r = VideoReader(path)
    assert (r.info.width, r.info.height, r.info.rotation) == (64, 96, 90)
    img = next(iter(r)).image
    expected = np.rot90(_pattern(0))
    assert img.shape == expected.shape
    assert np.abs(img.astype(int) - expected.astype(int)).mean() < 8


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    path = tmp_path / "vfr.mkv"
    times_ms = [0, 33, 66, 150, 400, 433, 1000]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(_pattern(i), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    frames = list(VideoReader(path))
    np.testing.assert_allclose([f.time for f in frames], np.array(times_ms) / 1000, atol=2e-3)
    assert [f.index for f in frames] == list(range(len(times_ms)))
    assert [f.time for f in VideoReader(path, start=0.1, end=0.5)] == pytest.approx([0.15, 0.4, 0.433], abs=2e-3)


def test_images_and_folders(tmp_path):
    for i in range(3):
        Image.fromarray(_pattern(i)).save(tmp_path / f"f{i:03d}.png")
    r = VideoReader(tmp_path, fps=10)
    frames = list(r)
    assert r.info.kind == "folder" and [f.index for f in frames] == [0, 1, 2]
    assert [f.time for f in frames] == pytest.approx([0, 0.1, 0.2])
    assert (frames[2].image == _pattern(2)).all()
    one = list(VideoReader(tmp_path / "f001.png"))
    assert len(one) == 1 and (one[0].image == _pattern(1)).all()


def test_bad_input_names_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.mp4: no such file"):
        VideoReader(tmp_path / "missing.mp4")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="corrupt.mp4: not a readable video"):
        VideoReader(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not a readable video"):
        VideoReader(text)
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(_pattern(0)).save(folder / "a.png")
    (folder / "b.txt").write_text("x")
    with pytest.raises(InputError, match="mixed: not an image folder; it holds b.txt"):
        VideoReader(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        VideoReader(tmp_path / "empty")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg: not a readable image"):
        VideoReader(broken)
    with pytest.raises(InputError, match="no frames were written"):
        VideoWriter(tmp_path / "none.mp4", fps=30).close()
    assert not (tmp_path / "none.mp4").exists()
    with pytest.raises(InputError, match="stride"):
        VideoReader(sports2d_demo(), stride=0)


def test_frames_decoded_ahead_are_the_same_frames_and_errors_still_surface():
    import threading

    plain = list(VideoReader(sports2d_demo(), start=1.0, end=2.0, stride=3))
    ahead = list(prefetched(VideoReader(sports2d_demo(), start=1.0, end=2.0, stride=3), depth=2))
    assert [(f.index, f.time) for f in ahead] == [(f.index, f.time) for f in plain]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(ahead, plain))

    def failing():  # a video that breaks after two frames, as a truncated file does
        yield 1
        yield 2
        raise InputError("clip.mp4: decoding failed after frame 1")

    got = []
    with pytest.raises(InputError, match="decoding failed after frame 1"):
        for x in prefetched(failing()):
            got.append(x)
    assert got == [1, 2]
    # a consumer that stops early (an error in the detector) stops the decoding thread too
    it = prefetched(VideoReader(sports2d_demo()), depth=2)
    next(it)
    it.close()
    assert not any(t.name == "meshcap-decode" for t in threading.enumerate())


def test_a_video_is_probed_once_per_version(tmp_path, monkeypatch):
    """A capture asks for a video's info several times; the container is opened once per
    version of the file, and a file rewritten at the same path is probed again."""
    import meshcap.video as video

    out = tmp_path / "clip.mp4"
    with VideoWriter(out, fps=25) as w:
        for i in range(6):
            w.write(_pattern(i))
    probes = []
    real = VideoReader._probe_container
    monkeypatch.setattr(VideoReader, "_probe_container", lambda self: probes.append(self.path) or real(self))
    first = VideoReader(out).info
    again = VideoReader(tmp_path / "." / "clip.mp4", start=0.1).info
    assert len(probes) == 1 and again.path == tmp_path / "." / "clip.mp4"
    assert (again.width, again.height, again.fps, again.num_frames) == (first.width, first.height, 25.0, 6)
    with VideoWriter(out, fps=10) as w:  # a new version: another size and rate
        for i in range(4):
            w.write(_pattern(i, h=48, w=64))
    info = VideoReader(out).info
    assert len(probes) == 2 and (info.width, info.height, info.fps, info.num_frames) == (64, 48, 10.0, 4)
    assert len(video._PROBED) <= 64
