"""`replay.codec.nvimgcodec`: nvImageCodec loads nvJPEG through our private extension folder, the
folder survives a recreated virtual environment, device strings parse. Runs without a
GPU: nvImageCodec loads its extensions (and prints why one fails) on any machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from replay.codec import nvimgcodec as gpu
from replay.codec.devices import parse_device

ROOT = Path(__file__).resolve().parents[3]


def run_python(code: str, tmp_path: Path, **env: str) -> str:
    """Run `code` in a fresh interpreter (nvImageCodec reads its extension path once);
    stdout and stderr together, where nvImageCodec prints its load errors."""
    environ = {k: v for k, v in os.environ.items() if k != "NVIMGCODEC_EXTENSIONS_PATH"}
    environ.update(TMPDIR=str(tmp_path), **env)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout + done.stderr


LOAD_DECODER = """
from replay.codec import nvimgcodec as gpu
nvi = gpu.nvimgcodec(gpu=True)
nvi.Decoder(device_id=nvi.NVIMGCODEC_DEVICE_CPU_ONLY)  # loads the extensions
r = gpu.load_report()
print("REPORT", r.nvjpeg, r.extensions, r.problems)
"""


def test_the_nvjpeg_extension_loads_its_library(tmp_path: Path) -> None:
    out = run_python(LOAD_DECODER, tmp_path)
    assert "Failed to load nvJPEG" not in out, out
    assert "[nvjpeg-ext]" not in out, out
    report = next(line for line in out.splitlines() if line.startswith("REPORT"))
    assert "cu13/lib/libnvjpeg.so.13" in report
    assert "['libjpeg_turbo_ext', 'libnvjpeg_ext'] []" in report
    assert "nvjpeg2k" not in out  # only our extensions: no JPEG 2000 / TIFF errors


def test_a_folder_of_links_alone_loses_nvjpeg(tmp_path: Path) -> None:
    """Why the preload exists: through a link, $ORIGIN/../../cu13/lib points nowhere."""
    folder = gpu.extension_folder(gpu.CPU_EXTENSIONS + gpu.GPU_EXTENSIONS)
    out = run_python(
        "from nvidia import nvimgcodec as n; n.Decoder(device_id=n.NVIMGCODEC_DEVICE_CPU_ONLY)",
        tmp_path,
        NVIMGCODEC_EXTENSIONS_PATH=str(folder),
    )
    assert "[nvjpeg-ext] Failed to load nvJPEG library" in out


def test_cpu_only_loading_leaves_nvjpeg_out(tmp_path: Path) -> None:
    out = run_python(LOAD_DECODER.replace("gpu=True", "gpu=False"), tmp_path)
    assert "REPORT None ['libjpeg_turbo_ext'] []" in out


def fake_wheel(root: Path, content: bytes) -> Path:
    """An nvImageCodec-like folder with one extension file (what the links point to)."""
    (root / "extensions").mkdir(parents=True, exist_ok=True)
    (root / "extensions" / "libjpeg_turbo_ext.so.0.9.0").write_bytes(content)
    (root / "extensions" / "libnvtiff_ext.so.0.9.0").write_bytes(b"not wanted")
    return root


def test_a_recreated_venv_gets_a_fresh_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    venv = fake_wheel(tmp_path / "venv", b"first build")
    first = gpu.extension_folder(gpu.CPU_EXTENSIONS, venv)
    assert [p.name for p in first.iterdir()] == ["libjpeg_turbo_ext.so.0.9.0"]
    assert gpu.extension_folder(gpu.CPU_EXTENSIONS, venv) == first  # made once
    # the venv is deleted and built again at the same path
    for f in (venv / "extensions").iterdir():
        f.unlink()
    fake_wheel(venv, b"second build, another size")
    second = gpu.extension_folder(gpu.CPU_EXTENSIONS, venv)
    assert second != first
    link = second / "libjpeg_turbo_ext.so.0.9.0"
    assert link.read_bytes() == b"second build, another size"


def test_a_folder_of_dangling_links_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    venv = fake_wheel(tmp_path / "venv", b"x")
    folder = gpu.extension_folder(gpu.CPU_EXTENSIONS, venv)
    link = folder / "libjpeg_turbo_ext.so.0.9.0"
    link.unlink()
    link.symlink_to(tmp_path / "gone")
    assert gpu.extension_folder(gpu.CPU_EXTENSIONS, venv) == folder
    assert link.read_bytes() == b"x"


def test_missing_nvjpeg_is_explained(tmp_path: Path) -> None:
    root = fake_wheel(tmp_path / "nvidia" / "nvimgcodec", b"x")
    assert gpu.nvjpeg_candidates(root)[0] == tmp_path / "nvidia/cu13/lib/libnvjpeg.so.13"
    path, problem = gpu.preload_nvjpeg(gpu.nvjpeg_candidates(root)[:1])
    assert path is None
    assert problem is not None
    assert "nvJPEG is not installed (pip install 'nvidia-nvjpeg>=13.2,<14')" in problem
    assert str(tmp_path / "nvidia" / "cu13" / "lib") in problem


def test_parse_device() -> None:
    assert parse_device("cpu") == ("cpu", 0)
    assert parse_device("auto") == ("auto", 0)
    assert parse_device("cuda") == ("cuda", 0)
    assert parse_device("cuda:2") == ("cuda", 2)
    for bad in ("cuda:", "cuda:a", "cpu:0", "gpu", ""):
        with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda' or 'cuda:N'"):
            parse_device(bad)


CODE_STREAM_REUSE = """
import numpy as np
from nvidia import nvimgcodec as n
from replay.codec import jpeg
encoder = n.Encoder(device_id=n.NVIMGCODEC_DEVICE_CPU_ONLY, backends=[n.Backend(n.CPU_ONLY)])
params = n.EncodeParams(quality_type=n.QualityType.QUALITY, quality_value=90.0,
                        chroma_subsampling=n.ChromaSubsampling.CSS_420)
frame = jpeg.probe_frame(64, 96)
pool = [n.CodeStream(50000, pin_memory=False), n.CodeStream(10, pin_memory=False)]
out = encoder.encode([frame, frame[:32]], "jpeg", code_stream_s=pool, params=params)
assert out[0] is pool[0] and out[1] is pool[1], out
blobs = [bytes(c) for c in out]
assert len(blobs[0]) == out[0].size < out[0].capacity == 50000  # the encoded bytes only
assert out[1].capacity >= out[1].size > 10  # a small buffer grows
assert jpeg.same_picture(jpeg.decode_host(blobs[0]), frame)
assert jpeg.same_picture(jpeg.decode_host(blobs[1]), frame[:32])
again = encoder.encode([frame[:16]], "jpeg", code_stream_s=pool[:1], params=params)
assert again[0] is pool[0] and len(bytes(again[0])) == again[0].size < len(blobs[0])
print("REUSED")
"""


def test_nvimagecodec_reuses_the_code_streams_it_is_given(tmp_path: Path) -> None:
    """The contract `JpegEncoder`'s pool of pinned CodeStreams relies on, checked with
    nvImageCodec's CPU (OpenCV) JPEG encoder: the streams passed in come back filled,
    bytes() gives the encoded size, a stream too small grows."""
    folder = gpu.extension_folder(("libopencv_ext", *gpu.CPU_EXTENSIONS))
    out = run_python(CODE_STREAM_REUSE, tmp_path, NVIMGCODEC_EXTENSIONS_PATH=str(folder))
    assert "REUSED" in out, out


def test_an_extension_that_fails_to_load_is_reported(tmp_path: Path) -> None:
    """nvImageCodec prints why an extension did not load; the report keeps the line."""
    folder = gpu.extension_folder(gpu.CPU_EXTENSIONS + gpu.GPU_EXTENSIONS)
    code = LOAD_DECODER.replace("gpu=True", "gpu=False")  # no nvJPEG preload
    out = run_python(code, tmp_path, NVIMGCODEC_EXTENSIONS_PATH=str(folder))
    report = next(line for line in out.splitlines() if line.startswith("REPORT"))
    assert "['libjpeg_turbo_ext', 'libnvjpeg_ext']" in report
    assert "[nvjpeg-ext] Failed to load nvJPEG library or retrieve version" in report
    assert "\x1b[" not in report  # colour codes stripped
    assert "[nvjpeg-ext] Failed to load nvJPEG library" in out.replace(report, "")  # still shown
