import pytest

from resnet_keras import PAPER_NUMBERS, count_flops, count_params, get_model

CIFAR_PAPER_PARAMS_M = {
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
    "resnet1202": 19.4,
}
IMAGENET_KERAS_BACKBONE = {
    "resnet18": 11_186_112,
    "resnet34": 21_301_696,
    "resnet50": 23_561_152,
    "resnet101": 42_605_504,
    "resnet152": 58_295_232,
}
TABLE1_FLOPS = {"resnet18": 1.8e9, "resnet34": 3.6e9, "resnet50": 3.8e9, "resnet101": 7.6e9, "resnet152": 11.3e9}


@pytest.mark.parametrize(
    "name, millions",
    [
        pytest.param(name, millions, marks=[pytest.mark.slow] if name == "resnet1202" else [])  # 28 s to build
        for name, millions in CIFAR_PAPER_PARAMS_M.items()
    ],
)
def test_cifar_parameters_round_to_the_paper(build, name, millions):
    # The paper counts weights that are learned (BN moving statistics are not).
    trainable = count_params(build(name, size="small"), trainable_only=True)
    digits = 1 if millions >= 1 else 2
    assert round(trainable / 1e6, digits) == millions
    assert PAPER_NUMBERS[name]["params_m"] == millions


@pytest.mark.parametrize("name, expected", IMAGENET_KERAS_BACKBONE.items())
def test_imagenet_backbones_match_keras_reference_counts(build, name, expected):
    model = build(name, size="small")
    assert count_params(model, head=False) == expected
    # The head is one dense layer of 1000 classes on top of that.
    width = model.get_layer("avg_pool").output.shape[-1]
    assert count_params(model) == expected + width * 1000 + 1000


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_and_option_a_residual_twin_have_the_same_parameters(build, depth):
    residual = build(f"resnet{depth}", size="small")
    plain = build(f"plain{depth}", size="small")
    assert residual.count_params() == plain.count_params()
    assert len(residual.weights) == len(plain.weights)
    assert any(layer.name.endswith("_0_zeropad") for layer in residual.layers)
    assert not any(layer.name.endswith("_add") for layer in plain.layers)


def _projection_cost(model, shortcut):
    """What projections should cost: a 1x1 conv (no bias) plus a BN with gamma,
    beta and two moving statistics, at each block whose output shape differs from
    its input shape (option B) or at every block (option C)."""
    names = {layer.name for layer in model.layers}
    total = 0
    for layer in model.layers:
        if not layer.name.endswith("_add"):
            continue
        block = layer.name.removesuffix("_add")
        # The block's input: what its projection reads, or the identity itself.
        x = model.get_layer(f"{block}_0_conv").input if f"{block}_0_conv" in names else layer.input[0]
        c_in, c_out = x.shape[-1], layer.output.shape[-1]
        if shortcut == "C" or tuple(x.shape[1:]) != tuple(layer.output.shape[1:]):
            total += c_in * c_out + 4 * c_out
    return total


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "resnet50"])
def test_options_b_and_c_add_exactly_their_projections(build, name):
    a = build(name, size="small", shortcut="A")
    b = build(name, size="small", shortcut="B")
    c = build(name, size="small", shortcut="C")
    plain_count = sum(1 for layer in a.layers if layer.name.endswith("_add"))
    n_proj_b = sum(1 for layer in b.layers if layer.name.endswith("_0_conv"))
    n_proj_c = sum(1 for layer in c.layers if layer.name.endswith("_0_conv"))
    assert n_proj_c == plain_count  # option C: every block projects
    stages = 3 if name == "resnet20" else 4
    # Option B projects where the shape changes: the first block of each stage,
    # except conv2_block1 of a basic-block net, whose input already has 64 channels.
    assert n_proj_b == (stages if name == "resnet50" else stages - 1)
    assert b.count_params() - a.count_params() == _projection_cost(b, "B")
    assert c.count_params() - a.count_params() == _projection_cost(c, "C")


def test_option_a_adds_no_parameter(build):
    for depth in (20, 56):
        residual = build(f"resnet{depth}", size="small")
        plain = build(f"plain{depth}", size="small")
        assert count_params(residual) == count_params(plain)
    # Option A on an ImageNet network: same parameters as its plain twin too.
    assert count_params(build("resnet34", size="small", shortcut="A")) == count_params(build("plain34", size="small"))


@pytest.mark.parametrize("name, paper", TABLE1_FLOPS.items())
def test_flops_within_5_percent_of_table_1(build, name, paper):
    flops = count_flops(build(name))
    assert abs(flops - paper) / paper < 0.05, f"{name}: {flops / 1e9:.3f}e9 vs {paper / 1e9}e9"


def test_resnet20_costs_about_41_million_multiply_adds(build):
    flops = count_flops(build("resnet20"))
    assert 40.5e6 < flops < 41.5e6


def test_flops_count_convolutions_and_dense_by_hand():
    model = get_model("resnet20", num_classes=10, input_shape=(8, 8, 3), stage_depths=(1, 1, 1))
    expected = (
        8 * 8 * 16 * 9 * 3  # conv1
        + 2 * (8 * 8 * 16 * 9 * 16)  # conv2_block1
        + 4 * 4 * 32 * 9 * 16
        + 4 * 4 * 32 * 9 * 32  # conv3_block1
        + 2 * 2 * 64 * 9 * 32
        + 2 * 2 * 64 * 9 * 64  # conv4_block1
        + 64 * 10  # logits
    )
    assert count_flops(model) == expected


def test_flops_need_a_fixed_input_size():
    model = get_model("resnet18", num_classes=10, input_shape=(None, None, 3), normalization="channel")
    with pytest.raises(ValueError, match="fixed input size"):
        count_flops(model)
