"""`replay doctor` on this machine: the report it prints, its JSON, its verdict. On a
machine without a GPU (CI) it must say so, skip the GPU backends with the reason, and
pass, because the CPU path that device='auto' takes works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replay.cli.doctor import Absent, _attempt, auto_path
from replay.cli.main import main
from replay.codec.devices import cuda_available
from replay.codec.gpu_check import GpuCheck


def run_doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    code, out = run_doctor("--json")
    assert code == 0, out
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def test_the_cpu_backend_is_checked_by_a_round_trip(report: dict[str, Any]) -> None:
    cpu = report["checks"][0]
    assert cpu["name"] == "cpu encode+decode (libjpeg-turbo)"
    assert cpu["ok"] is True
    assert "256x256" in cpu["detail"]
    assert report["packages"]["simplejpeg"]
    assert report["packages"]["numpy"]
    assert report["python"].count(".") == 2


@pytest.mark.skipif(cuda_available(), reason="explains a machine without a GPU")
def test_a_cpu_only_machine_is_explained(report: dict[str, Any]) -> None:
    assert report["ok"] is True
    assert report["cuda"]["available"] is False
    reason = report["cuda"]["reason"]
    assert "CuPy is not installed" in reason or "no usable GPU" in reason
    gpu_rows = report["checks"][1:]
    assert [c["name"] for c in gpu_rows] == [
        "cuda encode (nvJPEG)",
        "cuda decode (hardware JPEG decoder)",
        "cuda decode (nvJPEG CUDA)",
        "cuda fused transform",
    ]
    assert all(c["ok"] is None and c["detail"] == f"skipped: {reason}" for c in gpu_rows)
    assert report["auto"] == {"device": "cpu", "reason": f"no GPU: {reason}", "works": True}
    nvi = report["nvimgcodec"]
    assert nvi["installed"] is True
    assert nvi["extensions"] == ["libjpeg_turbo_ext"]
    assert nvi["nvjpeg"].endswith("cu13/lib/libnvjpeg.so.13")  # it would load on a GPU
    assert nvi["unused"] == "libnvjpeg_ext: not loaded, no CUDA device"
    assert nvi["problems"] == []


@pytest.mark.skipif(cuda_available(), reason="explains a machine without a GPU")
def test_the_text_report_says_which_path_auto_takes() -> None:
    code, out = run_doctor()
    assert code == 0, out
    assert "CUDA: none (" in out
    assert "ok   cpu encode+decode (libjpeg-turbo)" in out
    assert "-    cuda decode (hardware JPEG decoder): skipped:" in out
    assert "device='auto' takes the CPU path (works): no GPU:" in out


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_a_gpu_machine_checks_every_backend(report: dict[str, Any]) -> None:
    assert report["cuda"]["devices"]
    rows = {c["name"]: c for c in report["checks"]}
    assert rows["cuda:0 encode (nvJPEG)"]["ok"] is True, rows
    assert rows["cuda:0 decode (nvJPEG CUDA)"]["ok"] is True, rows
    # an RTX card or a T4 has no hardware JPEG decoder: skipped there, never failed
    assert rows["cuda:0 decode (hardware JPEG decoder)"]["ok"] in (True, None), rows
    assert rows["cuda:0 fused transform"]["ok"] is True, rows
    assert "libnvjpeg_ext" in report["nvimgcodec"]["extensions"]
    assert report["nvimgcodec"]["problems"] == []
    assert report["auto"]["device"] == "cuda"


def test_the_verdict_follows_the_path_auto_takes() -> None:
    no_gpu = {"reason": "CuPy is not installed"}
    assert auto_path(None, True, no_gpu) == ("cpu", "no GPU: CuPy is not installed", True)
    assert auto_path(None, False, no_gpu)[2] is False  # nothing works: exit 1
    good = GpuCheck(True, "decoded with the hardware backend")
    assert auto_path(good, False, {})[:2] == (
        "cuda",
        "GPU 0 passed a one-frame round trip (decoded with the hardware backend)",
    )
    broken = GpuCheck(False, "RuntimeError: nvImageCodec failed to encode image #0")
    device, why, works = auto_path(broken, True, {})
    assert (device, works) == ("cpu", True)  # falls back, and the fallback works
    assert "round trip failed (RuntimeError: nvImageCodec failed" in why
    assert auto_path(broken, False, {})[2] is False


def test_a_part_this_gpu_lacks_is_skipped_not_failed() -> None:
    def no_hardware_decoder() -> str:
        raise Absent("this GPU has no hardware JPEG decoder; the CUDA backend decodes")

    def broken() -> str:
        raise RuntimeError("the decoded frame does not match")

    skipped = _attempt("cuda:0 decode (hardware JPEG decoder)", no_hardware_decoder)
    assert (skipped.ok, skipped.detail) == (
        None,
        "skipped: this GPU has no hardware JPEG decoder; the CUDA backend decodes",
    )
    assert _attempt("cuda:0 decode (nvJPEG CUDA)", broken).ok is False


def test_the_gpu_extra_is_suggested_once_and_only_where_a_gpu_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from replay.cli import doctor

    code, out = run_doctor()
    assert code == 0, out
    if doctor.gpu_present():  # a GPU machine: said once, if anything is missing
        assert out.count("pip install") <= 1
    else:  # the CI machine: nothing to install for a GPU it does not have
        assert "pip install" not in out
    # the kernel driver's view of a machine with one GPU (its folder per GPU)
    (tmp_path / "0000:01:00.0").mkdir()
    monkeypatch.setattr(doctor, "NVIDIA_GPUS", tmp_path)
    code, out = run_doctor()
    assert code == 0, out
    if doctor.cuda_report().get("reason") == doctor.NO_CUPY:  # the extra brings CuPy
        assert out.count("pip install 'replay[gpu]'") == 1
        assert "This machine has a GPU: pip install 'replay[gpu]'" in out
