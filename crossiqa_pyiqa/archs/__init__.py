"""Architectures registered in pyiqa's ARCH_REGISTRY when imported.

``crossiqa_arch.py`` (the ``CrossIQA`` wrapper: configs, pretext, features, heads) builds one
of the encoders ``cnn_encoder.py`` (pretrained CNN, over ``backbones.py``), ``vit_encoder.py``
(pretrained ViT) or ``vit_scratch.py`` (from-scratch ViT), and the pixel decoder
``decoder.py``; ``grepq_arch.py`` is GRepQ.
"""
