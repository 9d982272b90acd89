"""NIfTI data: reading datasets in the layouts people use, preprocessing with inverses, synthetic MRI.

Public API:
    Case, CaseFiles, read_dataset, detect_layout, read_image, write_like, load_case, apply_label_policy
    (preprocessing lives in `bayesprior.data.preprocess`, the generator in `bayesprior.data.synth`,
    the file-naming conventions in `bayesprior.data.naming`).
"""
from __future__ import annotations

from .cases import Case, CaseFiles, apply_label_policy, check_same_grid, load_case, resolve_channel
from .datasets import check_folder, detect_layout, read_dataset
from .naming import (
                     case_id_of,
                     case_ids,
                     channel_file_name,
                     is_nifti_name,
                     nifti_inputs,
                     split_channel_suffix,
                     strip_nifti_suffix,
)
from .nifti import read_image, read_label_values, read_volume, write_like

__all__ = [
    "Case", "CaseFiles", "read_dataset", "detect_layout", "read_image", "read_volume", "read_label_values",
    "write_like",
    "load_case", "apply_label_policy", "check_same_grid", "resolve_channel", "check_folder", "is_nifti_name",
    "strip_nifti_suffix", "channel_file_name", "split_channel_suffix", "case_id_of", "case_ids", "nifti_inputs",
]
