"""Model code shared by the services and the Triton model repository.

`backbone` is the EfficientNet-Lite0 image network (embeddings + ImageNet "general" classes),
`preprocess` the image geometry that feeds it, `text_encoder` the MiniLM sentence encoder.
Submodules are imported explicitly (they pull in torch), so importing this package is cheap.
"""
