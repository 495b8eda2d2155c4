"""ImageNet weights trained elsewhere (torchvision, timm, keras-hub), ported to this library's networks (issue 39).

``readers`` reads the weight files without PyTorch or keras-hub: ``.safetensors``, ``torch.save`` zips (through a
restricted unpickler that builds nothing but arrays) and Keras 3 ``.weights.h5`` files.
"""
