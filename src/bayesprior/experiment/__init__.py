"""The paper's protocol (Algorithms 2-3, Tables 3-4): source zoo -> harvest -> prior -> target runs -> tables."""
from .config import ExperimentConfig, load_config, parse_config
from .runs import ResultStore, RunSpec, all_runs, make_splits, parse_shard, shard_runs

__all__ = ["ExperimentConfig", "load_config", "parse_config", "ResultStore", "RunSpec", "all_runs",
           "make_splits", "parse_shard", "shard_runs"]
