"""Shared training infrastructure (options, data, tasks, trainer) for Cross-IQA and GRepQ."""
