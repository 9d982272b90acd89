"""MR signal from tissue relaxation times: spin-echo and FLAIR equations, BrainWeb 1.5 T tissue values."""
from __future__ import annotations

from typing import TypedDict

import numpy as np

# BrainWeb 1.5 T: T1 (ms), T2 (ms), proton density
TISSUES = {
    "csf": (2569.0, 329.0, 1.00),
    "gm": (833.0, 83.0, 0.86),
    "wm": (500.0, 70.0, 0.77),
    "lesion": (752.0, 237.0, 0.76),
}


class MRSequence(TypedDict):
    """An MR sequence: its signal equation and its repetition and echo times (ms)."""

    equation: str
    TR: float
    TE: float


SEQUENCES: dict[str, MRSequence] = {
    "T2": {"equation": "spin_echo", "TR": 3500.0, "TE": 100.0},
    "FLAIR": {"equation": "flair", "TR": 9000.0, "TE": 100.0},
}


def spin_echo(pd: float, t1: float, t2: float, tr: float, te: float) -> float:
    """S = PD (1 - exp(-TR/T1)) exp(-TE/T2)."""
    return pd * (1 - np.exp(-tr / t1)) * np.exp(-te / t2)


def flair(pd: float, t1: float, t2: float, tr: float, te: float, ti: float) -> float:
    """S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)."""
    return pd * abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def csf_nulling_inversion_time(t1_csf: float, tr: float) -> float:
    """TI that nulls CSF: T1_csf ln(2 / (1 + exp(-TR/T1_csf)))."""
    return t1_csf * np.log(2 / (1 + np.exp(-tr / t1_csf)))


def tissue_signals(sequence: str, rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """Per-tissue signal for one subject with jittered tissue values (T1/T2 +-7%, PD +-4%) and sequence
    parameters (TR/TE +-10%, TI +-4% around CSF nulling).

    Returns:
        ({tissue: signal}, parameters for the manifest).
    """
    seq = SEQUENCES[sequence]
    tr = seq["TR"] * rng.uniform(0.9, 1.1)
    te = seq["TE"] * rng.uniform(0.9, 1.1)
    tissues = {name: (t1 * rng.uniform(0.93, 1.07), t2 * rng.uniform(0.93, 1.07), pd * rng.uniform(0.96, 1.04))
               for name, (t1, t2, pd) in TISSUES.items()}
    params = {"sequence": sequence, "TR": tr, "TE": te,
              "tissues": {k: {"T1": v[0], "T2": v[1], "PD": v[2]} for k, v in tissues.items()}}
    if seq["equation"] == "flair":
        ti = csf_nulling_inversion_time(tissues["csf"][0], tr) * rng.uniform(0.96, 1.04)
        params["TI"] = ti
        signals = {name: flair(pd, t1, t2, tr, te, ti) for name, (t1, t2, pd) in tissues.items()}
    else:
        signals = {name: spin_echo(pd, t1, t2, tr, te) for name, (t1, t2, pd) in tissues.items()}
    return {k: float(v) for k, v in signals.items()}, params


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|S + n1 + i n2| with n1, n2 ~ N(0, sigma^2): magnitude-image noise."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary)
