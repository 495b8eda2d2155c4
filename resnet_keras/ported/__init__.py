"""ImageNet weights trained elsewhere (torchvision, timm, keras-hub), ported to this library's networks (issue 39).

``readers`` reads the weight files without PyTorch or keras-hub: ``.safetensors``, ``torch.save`` zips (through a
restricted unpickler that builds nothing but arrays) and Keras 3 ``.weights.h5`` files. ``mapping`` names which
tensor goes into which weight, ``catalog`` lists the known weights and parses ``SOURCE:NAME[=PATH]``, ``fetch`` finds
or downloads the file, ``presets`` reads a keras-hub preset folder, ``classes`` holds the 1000 ImageNet class names,
and ``load.load_imagenet`` (also ``get_model(..., weights="SOURCE:NAME")``) does it all in one call.
"""
