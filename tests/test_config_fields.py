"""The new MLPConfig fields: defaults keep the plain network, to_dict/from_dict round-trip, slug names them."""

from manual_backprop.config import MLPConfig


def test_defaults_are_the_plain_network():
    config = MLPConfig()
    assert (config.dropout, config.input_dropout, config.maxout_pieces, config.max_norm) == (0.0, 0.0, 2, None)
    assert config.slug() == "784-256-128-10_relu_cross_entropy"
    assert [config.linear_shape(layer) for layer in (1, 2, 3)] == [(256, 784), (128, 256), (10, 128)]


def test_round_trip_and_slug_with_every_new_setting():
    config = MLPConfig(sizes=(784, 1200, 1200, 10), activation="maxout", maxout_pieces=3, dropout=0.5,
                       input_dropout=0.2, max_norm=3.5, init="xavier_normal", l2=1e-4)
    described = config.to_dict()
    assert described["maxout_pieces"] == 3 and described["max_norm"] == 3.5 and described["dropout"] == 0.5
    assert MLPConfig.from_dict(described) == config
    assert config.slug() == ("784-1200-1200-10_maxout3_cross_entropy_l2-0.0001_drop-0.5_indrop-0.2_maxnorm-3.5"
                             "_init-xavier_normal")
    assert config.linear_shape(1) == (3600, 784) and config.linear_shape(3) == (10, 1200)


def test_a_description_from_before_the_new_fields_still_loads():
    old = {"sizes": [784, 256, 10], "activation": "relu", "output_activation": "softmax", "loss": "cross_entropy",
           "mse_convention": "course", "l2": 0.0, "leaky_slope": 0.1, "elu_alpha": 1.0, "init": "torch_linear",
           "dtype": "float32", "device": "cpu"}
    assert MLPConfig.from_dict(old) == MLPConfig(sizes=(784, 256, 10))


def test_bce_defaults_to_the_fused_sigmoid_output():
    config = MLPConfig(sizes=(5, 3, 1), loss="bce")
    assert config.output_activation == "sigmoid" and config.fused_output
    assert not MLPConfig(sizes=(5, 3, 1), loss="mse", output_activation="sigmoid").fused_output
