"""Regression stage: frozen features → ridge head, and the evaluation protocols (DESIGN §2.2, §5)."""
from crossiqa_pyiqa.regression.datasets import DatasetError, build_iqa_dataset, check_meta_info, dataset_records
from crossiqa_pyiqa.regression.protocol import (correlations, data_efficient, evaluate_scores, linear_probe,
                                                per_type)
from crossiqa_pyiqa.regression.ridge import RankingRows, RidgeModel, fit_ridge, fit_ridge_cv, select_alpha
from crossiqa_pyiqa.regression.splits import random_splits, subsample

__all__ = ['DatasetError', 'build_iqa_dataset', 'check_meta_info', 'dataset_records', 'correlations',
           'data_efficient', 'evaluate_scores', 'linear_probe', 'per_type', 'RankingRows', 'RidgeModel', 'fit_ridge',
           'fit_ridge_cv', 'select_alpha', 'random_splits', 'subsample']
