"""Architectures registered in pyiqa's ARCH_REGISTRY when imported."""
