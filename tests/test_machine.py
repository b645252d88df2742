"""Reading the machine: CPU flags for the kernel choice, and the line eval.json records."""

import pytest
import tensorflow as tf

from aur_tf import machine

_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx2 {extra}
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: another CPU
flags\t\t: fpu sse2
"""
_AVX512_CORE = "avx512f avx512dq avx512bw avx512vl avx512_vnni"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Writes a fake /proc/cpuinfo (None: none at all), no GPUs; returns its path."""
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda device_type=None: [])
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    path = tmp_path / "cpuinfo"

    def write(text):
        if text is not None:
            path.write_text(text)
        return str(path)

    return write


@pytest.mark.parametrize(
    "text, avx512_core",
    [
        (_CPUINFO.format(extra=_AVX512_CORE), True),
        (
            _CPUINFO.format(extra="avx512f avx512cd"),
            False,
        ),  # no avx512_core kernels without bw/dq/vl
        (_CPUINFO.format(extra=""), False),
        ("processor\t: 0\nFeatures\t: fp asimd sve\n", False),  # an ARM CPU: no "flags" line
        (None, False),
    ],
)
def test_avx512_core_is_read_from_the_first_cpus_flags(cpuinfo, text, avx512_core):
    assert machine.has_avx512_core(machine.cpu_flags(cpuinfo(text))) is avx512_core


@pytest.mark.parametrize(
    "text, expected",
    [
        (_CPUINFO.format(extra=_AVX512_CORE), "AMD EPYC 9B14, 2 cores, AVX-512"),
        (_CPUINFO.format(extra=""), "AMD EPYC 9B14, 2 cores, AVX2"),
        ("processor\t: 0\nFeatures\t: fp asimd sve\n", "{platform}, 2 cores"),
    ],
)
def test_describe_names_the_cpu_its_cores_and_vector_instructions(
    cpuinfo, monkeypatch, text, expected
):
    monkeypatch.setattr(machine.platform, "processor", lambda: "aarch64")
    assert machine.describe(cpuinfo(text)) == expected.format(platform="aarch64")


def test_describe_names_the_gpus(cpuinfo, monkeypatch):
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(
        tf.config,
        "list_physical_devices",
        lambda device_type=None: [gpu] if device_type == "GPU" else [],
    )
    monkeypatch.setattr(
        tf.config.experimental, "get_device_details", lambda device: {"device_name": "NVIDIA A100"}
    )
    assert machine.describe(cpuinfo(_CPUINFO.format(extra=""))) == (
        "AMD EPYC 9B14, 2 cores, AVX2, GPU: NVIDIA A100"
    )


def test_describe_this_machine_names_its_cores():
    assert f"{machine.usable_cores()} cores" in machine.describe()
