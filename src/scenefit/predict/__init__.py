"""Using the students: the Predictor (one base + three adapters), its config and results.

    from scenefit.predict import Predictor, PredictConfig
    pred = Predictor.from_students("runs/demo/students")
    [p.to_json() for p in pred.predict([("img.png", "cow", (10, 10, 60, 50))])]

Command line: ``scenefit predict --help``. Submodules: ``config`` (PredictConfig, section
``predict``), ``items`` (accepted inputs, red-box drawing), ``predictor`` (Predictor),
``results`` (Prediction), ``students`` (student folders, base resolution, weight bytes),
``toy_students`` (small trained students for tests and benchmarks).
"""

from scenefit.predict.config import PredictConfig
from scenefit.predict.items import ITEM_CODES, ItemError, PredictItem, prepare_image, to_item
from scenefit.predict.predictor import DecisionTokenError, Predictor, decision_token_ids
from scenefit.predict.results import CriterionResult, Prediction
from scenefit.predict.students import StudentError, StudentInfo, find_students, module_bytes, read_student

__all__ = [
    "PredictConfig", "Predictor", "Prediction", "CriterionResult", "PredictItem", "ItemError", "ITEM_CODES",
    "DecisionTokenError", "StudentError", "StudentInfo", "prepare_image", "to_item", "find_students",
    "read_student", "module_bytes", "decision_token_ids",
]
