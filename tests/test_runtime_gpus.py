"""One GPU query: `nvidia_gpus` runs nvidia-smi for the doctor, the TensorRT engine cache and the benchmarks.

The nvidia-smi here is a stand-in script on PATH (this machine has no NVIDIA driver) that prints what the real one
prints for the query it is given, records its arguments, and can fail as the real one does.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

import pytest

from unmix.bench.machine import gpu_info as bench_gpus
from unmix.runtime import UnmixError
from unmix.runtime.doctor import _nvidia_smi as doctor_gpus
from unmix.runtime.engine_cache import EngineCacheError, gpu_info
from unmix.runtime.gpus import FIELDS, GpuQueryError, NoNvidiaSmi, NvidiaGpu, nvidia_gpus

H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15"
L4 = "1, NVIDIA L4, 8.9, [N/A], 550.54.15"


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """Install a fake nvidia-smi printing `lines` (or failing with `error`); returns a reader of its calls."""

    def install(lines: list[str], error: str | None = None):
        script = tmp_path / "bin" / "nvidia-smi"
        script.parent.mkdir(exist_ok=True)
        script.write_text(
            textwrap.dedent(f"""\
            #!{sys.executable}
            import json, sys
            with open({str(tmp_path / "calls")!r}, "a") as calls:
                calls.write(json.dumps(sys.argv[1:]) + "\\n")
            if {error!r} is not None:
                print({error!r})
                sys.exit(6)
            lines = {lines!r}
            ids = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--id=")]
            if ids:
                lines = [line for line in lines if line.split(",")[0] == ids[0]]
                if not lines:
                    print("No devices were found")
                    sys.exit(6)
            print("\\n".join(lines))
        """)
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}")
        return lambda: [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return install


def test_every_gpu_is_parsed(fake_smi):
    calls = fake_smi([H100, L4])
    assert nvidia_gpus() == [
        NvidiaGpu(0, "NVIDIA H100 80GB HBM3", "9.0", 81559, "550.54.15"),
        NvidiaGpu(1, "NVIDIA L4", "8.9", None, "550.54.15"),  # memory the driver does not report
    ]
    assert calls() == [[f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits"]]


def test_the_three_users_read_the_same_query(fake_smi):
    calls = fake_smi([H100, L4])
    assert doctor_gpus() == [
        "0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 550.54.15",
        "1, NVIDIA L4, 8.9, ? MiB, 550.54.15",
    ]
    assert bench_gpus() == [
        {"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "driver": "550.54.15", "compute_capability": "9.0"},
        {"name": "NVIDIA L4", "memory_mib": None, "driver": "550.54.15", "compute_capability": "8.9"},
    ]
    assert gpu_info(1) == NvidiaGpu(1, "NVIDIA L4", "8.9", None, "550.54.15")
    assert [call[0] for call in calls()] == [f"--query-gpu={FIELDS}"] * 2 + ["--id=1"]


def test_the_engine_cache_follows_cuda_visible_devices(fake_smi, monkeypatch):
    calls = fake_smi([H100, L4])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu_info(0).name == "NVIDIA L4" and calls()[-1][0] == "--id=1"
    with pytest.raises(EngineCacheError, match="no CUDA device 1: CUDA_VISIBLE_DEVICES lists 1"):
        gpu_info(1)


def test_a_gpu_nvidia_smi_does_not_list_is_one_line(fake_smi):
    fake_smi([H100])
    with pytest.raises(GpuQueryError, match="^No devices were found$"):
        nvidia_gpus("3")
    with pytest.raises(EngineCacheError, match="^no CUDA device 3: No devices were found$"):
        gpu_info(3)


def test_a_failing_nvidia_smi_is_no_gpu_for_the_doctor_and_the_benchmarks(fake_smi):
    fake_smi([], error="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    with pytest.raises(GpuQueryError, match="couldn't communicate") as error:
        nvidia_gpus()
    assert isinstance(error.value, UnmixError) and not isinstance(error.value, NoNvidiaSmi)
    assert doctor_gpus() == [] and bench_gpus() == []


def test_no_nvidia_smi(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(NoNvidiaSmi):
        nvidia_gpus()
    assert doctor_gpus() == [] and bench_gpus() == []
    with pytest.raises(EngineCacheError, match="no NVIDIA driver found"):
        gpu_info()
