"""The machine a run trains on: its description, and which convolution kernels are fast on it.

A run's step time depends several-fold on the CPU, so every eval.json names the machines its run
trained on (`describe`), and `--conv_kernels=auto` reads the CPU's instruction sets (`cpu_flags`).
"""

import os
import platform

CPUINFO = "/proc/cpuinfo"
# The instruction sets of oneDNN's avx512_core kernels.
AVX512_CORE_FLAGS = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"})


def cpu_fields(cpuinfo_path=CPUINFO):
    """The `key: value` lines of the first CPU in `cpuinfo_path`; empty where it is unreadable."""
    fields = {}
    try:
        with open(cpuinfo_path) as cpuinfo:
            for line in cpuinfo:
                if not line.strip():  # A blank line ends the first CPU's block.
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _flags(cpu_fields):
    return frozenset(cpu_fields.get("flags", "").split())


def cpu_flags(cpuinfo_path=CPUINFO):
    """The CPU's instruction-set flags (`avx2`, `avx512f`, ...); empty where they cannot be read."""
    return _flags(cpu_fields(cpuinfo_path))


def has_avx512_core(flags):
    return AVX512_CORE_FLAGS <= flags


def usable_cores():
    """The CPU cores this process may run on (its affinity, e.g. in a container), >= 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        return os.cpu_count() or 1


def describe(cpuinfo_path=CPUINFO):
    """One line naming this machine: CPU model, usable cores, vector instructions, GPUs.

    E.g. "AMD EPYC, 2 cores, AVX-512" or "Intel(R) Xeon(R) ..., 8 cores, AVX2, GPU: NVIDIA A100".
    """
    # Imported here: the deployment path (aur_tf.separator) uses this module without TensorFlow.
    import tensorflow as tf

    fields = cpu_fields(cpuinfo_path)
    flags = _flags(fields)
    parts = [
        fields.get("model name") or platform.processor() or platform.machine() or "CPU",
        f"{usable_cores()} cores",
    ]
    if has_avx512_core(flags):
        parts.append("AVX-512")
    elif "avx2" in flags:
        parts.append("AVX2")
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        parts.append(f"GPU: {details.get('device_name', gpu.name)}")
    return ", ".join(parts)
