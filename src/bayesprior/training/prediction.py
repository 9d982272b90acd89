"""Deprecated alias of `bayesprior.inference.prediction` (case naming: `bayesprior.data.naming`); removed in 0.3."""
from .._deprecation import warn_moved
from ..data.naming import case_id_of, case_ids, nifti_inputs  # noqa: F401
from ..inference.prediction import (PredictionSettings, predict_case, predict_folder,  # noqa: F401
                                    predictive_entropy)

warn_moved(__name__, "bayesprior.inference.prediction")
