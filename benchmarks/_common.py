"""Shared helpers of the benchmarks: timing, peak memory, the matrix-multiply bound, machine info.

Peak memory
-----------
Each measured call runs in a *fresh* Python process (:func:`run_worker`). After the imports
and the data are in memory the process resets its resident-set high-water mark by writing
``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), then runs the call once and reads
``VmHWM`` from ``/proc/self/status``. The reported *peak extra RSS* is that high-water mark
minus the resident set size just before the call, i.e. the memory the call itself added on top
of the interpreter, the libraries and the input array. Where ``clear_refs`` cannot be written
the fallback is the ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` delta over the same baseline
(which can under-count when an earlier, freed allocation had already raised the mark); the
method used is recorded with every number.

Matrix-multiply bound
---------------------
An exact k-nearest-neighbour search of ``N`` points in ``D`` dimensions needs the ``N x N``
Gram matrix, i.e. ``N * N * D`` multiply-adds. :func:`matmul_bound` times exactly those float32
products, ``X[i:i+4096] @ X.T`` for every row block (torch, the same threads and device as the
code under test), which no exact brute-force kNN can beat by more than its use of symmetry.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

__all__ = [
    "best_time",
    "sync",
    "matmul_bound",
    "reset_peak_rss",
    "rss_bytes",
    "peak_rss_bytes",
    "PeakMemory",
    "run_worker",
    "machine_info",
    "machine_table",
    "markdown_table",
    "fmt_bytes",
    "fmt_seconds",
]


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def sync(device: str | None) -> None:
    """Wait for queued CUDA work (no-op on CPU), so wall times cover the whole computation."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def best_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0, device: str | None = None) -> tuple[float, list[float], Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns ``(best seconds, all timed seconds, result of the last call)``.
    """
    for _ in range(int(warmup)):
        fn()
        sync(device)
    times, out = [], None
    for _ in range(max(1, int(repeats))):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def matmul_bound(X, repeats: int = 3, block: int = 4096, device: str = "cpu", sample_blocks: int | None = None) -> dict:
    """Time the bare float32 products ``X @ X.T`` an exact kNN of ``X`` needs (``N*N*D`` MACs).

    ``X`` (N, D) is multiplied with its transpose in row blocks of ``block`` rows (each block
    against all ``N`` columns, the output of one block reused), best of ``repeats``. With
    ``sample_blocks`` only that many row blocks (spread evenly) are timed and the time is
    extrapolated linearly to all ``ceil(N / block)`` blocks: for very large ``N`` (1e6) where
    the full product takes minutes; the dict says whether it was extrapolated.

    Returns a dict: ``seconds`` (full ``N x N x D``), ``half_seconds`` (the upper triangle
    only, what a symmetric kNN needs), ``gflops`` (2*N*N*D / seconds / 1e9), ``block``,
    ``extrapolated``, ``times``.
    """
    import torch

    Xt = torch.as_tensor(X).to(device=device, dtype=torch.float32).contiguous()
    n, d = Xt.shape
    starts = list(range(0, n, block))
    if sample_blocks is not None and sample_blocks < len(starts):
        step = len(starts) / sample_blocks
        chosen = [starts[int(i * step)] for i in range(sample_blocks)]
    else:
        chosen = starts
    XT = Xt.T
    out = torch.empty((min(block, n), n), dtype=torch.float32, device=Xt.device)

    def run():
        for s in chosen:
            e = min(s + block, n)
            torch.mm(Xt[s:e], XT, out=out[: e - s])

    best, times, _ = best_time(run, repeats=repeats, warmup=1 if device != "cpu" else 0, device=device)
    # rows actually multiplied in the timed blocks -> scale to all n rows
    rows = sum(min(s + block, n) - s for s in chosen)
    scale = n / rows
    seconds = best * scale
    return {
        "seconds": seconds,
        "half_seconds": seconds * (n + block) / (2 * n) if n > block else seconds,
        "gflops": 2.0 * n * n * d / seconds / 1e9,
        "block": block,
        "extrapolated": scale != 1.0,
        "times": [t * scale for t in times],
        "n": n,
        "d": d,
    }


# --------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process (``VmRSS``), bytes; None off Linux."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_rss_bytes() -> int:
    """High-water resident set size of this process, bytes (``VmHWM``, else ``ru_maxrss``)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return int(kb) * 1024


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (``/proc/self/clear_refs``); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak extra resident memory of the enclosed block.

    ``extra`` (bytes) = peak RSS during the block - RSS at entry; ``peak`` = the process's
    absolute peak RSS at exit; ``method`` says how the peak was reset ("clear_refs" or
    "ru_maxrss-delta"). For CUDA devices ``cuda_peak`` is ``torch.cuda.max_memory_allocated``.
    """

    def __init__(self, device: str | None = None):
        self.device = device

    def __enter__(self):
        import gc

        gc.collect()
        self.cuda = self.device is not None and str(self.device).startswith("cuda")
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()
        self.reset = reset_peak_rss()
        self.method = "clear_refs" if self.reset else "ru_maxrss-delta"
        self.base = rss_bytes() if self.reset else peak_rss_bytes()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.peak = peak_rss_bytes()
        self.extra = max(0, self.peak - (self.base or 0))
        if self.cuda:
            import torch

            self.cuda_peak = int(torch.cuda.max_memory_allocated())
            self.cuda_extra = self.cuda_peak - self.cuda_base
        return False


def run_worker(args: list[str], timeout: float | None = None) -> dict:
    """Run ``python <args>`` in a fresh process; its last stdout line must be a JSON object."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"error": f"worker exited with {proc.returncode}: {tail.strip()}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------
# machine description and formatting
# --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        name = {"skdim": "scikit-dimension", "sklearn": "scikit-learn"}.get(mod, mod)
        return version(name)
    except Exception:
        return "not installed"


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, memory, torch threads, library versions and (if used) the GPU."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    info = {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": _cpu_model(),
        "logical cores (usable)": f"{os.cpu_count()} ({affinity})",
        "memory": fmt_bytes(_mem_total()),
        "load average (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "torch threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for mod in ("shapelens", "numpy", "scipy", "sklearn", "skdim", "dadapy"):
        info[mod] = _version(mod)
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name()
        info["TF32 matmul allowed"] = torch.backends.cuda.matmul.allow_tf32
    return info


def machine_table(info: dict) -> str:
    return markdown_table(["", ""], [[k, v] for k, v in info.items()])


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "n/a"
    b = float(b)
    if b >= 1 << 30:
        return f"{b / (1 << 30):.2f} GiB"
    return f"{b / (1 << 20):.0f} MiB"


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "n/a"
    if s >= 100:
        return f"{s:.0f}"
    if s >= 10:
        return f"{s:.1f}"
    if s >= 1:
        return f"{s:.2f}"
    return f"{s:.3f}"


def report_header(title: str, command: str, label: str | None, info: dict, load_before, load_after, wall: float,
                  load_note: str) -> list[str]:
    """The opening lines every benchmark report shares: title (with the run's label), the command
    that wrote it and its wall time, a warning for labelled (reduced or noisy) runs, the machine
    table and the load average before and after, followed by ``load_note``."""

    def load_s(la) -> str:
        return " / ".join(f"{x:.2f}" for x in la)

    lines = [f"# {title}{f' — {label}' if label else ''}", "",
             f"Written by `{command}{(' --label ' + repr(label)) if label else ''}` in one run of {wall / 60:.1f} min.", ""]
    if label:
        lines += [f"> **{label}.** Reduced or noisy run; re-run with the defaults on a quiet machine.", ""]
    lines += ["### Machine", "", machine_table(info), "",
              f"Load average (1/5/15 min) before the run: {load_s(load_before)}; after: {load_s(load_after)}. "
              + load_note, ""]
    return lines

