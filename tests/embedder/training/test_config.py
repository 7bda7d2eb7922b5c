import dataclasses

import pytest

from embedder.training.config import TrainingConfig


def test_defaults_match_the_estimator():
    from embedder import TripletEmbedder

    params = TripletEmbedder().get_params()
    for field in dataclasses.fields(TrainingConfig):
        if field.name in params:
            assert params[field.name] == field.default, field.name


def test_every_field_has_help_text():
    for field in dataclasses.fields(TrainingConfig):
        assert len(field.metadata["help"]) > 10, field.name


def test_resolve_fills_data_dependent_defaults():
    assert TrainingConfig().resolve(5).classes_per_batch == 5  # all when fewer than 64 / K
    assert TrainingConfig().resolve(100).classes_per_batch == 16
    assert TrainingConfig(samples_per_class=32).resolve(100).classes_per_batch == 2
    assert TrainingConfig(classes_per_batch=7).resolve(100).classes_per_batch == 7
    assert TrainingConfig().resolve(5).margin == 0.2
    assert TrainingConfig(loss="contrastive").resolve(5).margin == 0.5
    assert TrainingConfig(margin=0.3).resolve(5).margin == 0.3
    # two replicas split a class-major batch in halves: P even gives each whole classes
    assert TrainingConfig().resolve(5, n_replicas=2).classes_per_batch == 4
    assert TrainingConfig(cross_replica=True).resolve(5, n_replicas=2).classes_per_batch == 5
    assert TrainingConfig(classes_per_batch=5).resolve(9, n_replicas=2).classes_per_batch == 5


def test_round_trip_and_from_params():
    config = TrainingConfig(loss="semi_hard", epochs=3, checkpoint_dir="ck")
    assert TrainingConfig(**config.to_dict()) == config
    assert TrainingConfig.from_params({"epochs": 2, "encoder": "x", "input_shape": None}) \
        == TrainingConfig(epochs=2)
    assert config.replace(epochs=9).epochs == 9 and config.epochs == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 4


@pytest.mark.parametrize("changes, message", [
    ({"loss": "hinge"}, "loss must be one of ['batch_all', 'batch_hard', 'semi_hard', "
     "'contrastive', 'triplet', 'multi_similarity', 'supervised_contrastive', 'circle', "
     "'proxy_anchor', 'arcface'], got 'hinge'"),
    ({"distance": "l1"}, "distance must be one of ['euclidean', 'squared', 'cosine'], "
     "got 'l1'"),
    ({"margin": -1}, "margin must be a number >= 0 or None, got -1"),
    ({"samples_per_class": 1}, "samples_per_class must be an int >= 2, got 1"),
    ({"epochs": 2.5}, "epochs must be an int >= 1, got 2.5"),
    ({"learning_rate": 0}, "learning_rate must be a number > 0, got 0"),
    ({"validation_fraction": 1.0}, "validation_fraction must be a number in [0, 1), got 1.0"),
    ({"precision": "float8"}, "precision must be one of [None, 'mixed_float16', "
     "'mixed_bfloat16'], got 'float8'"),
    ({"loss": "triplet", "cross_replica": True}, "cross_replica=True needs an in-batch loss"),
    ({"soft": True}, "soft=True applies to loss='batch_hard' only, got loss='batch_all'"),
    ({"strategy": "multi_worker", "loss": "triplet"}, "strategy='multi_worker' needs an "
     "in-batch loss, got loss='triplet'"),
])
def test_validate_names_the_field(changes, message):
    with pytest.raises(ValueError) as info:
        TrainingConfig(**changes).validate()
    assert str(info.value).startswith(message)


def test_loss_settings_merge_the_soft_field_and_loss_params():
    assert TrainingConfig().loss_settings() == {}
    assert TrainingConfig(loss="batch_hard", soft=True).loss_settings() == {"soft": True}
    assert TrainingConfig(loss="batch_hard", loss_params={"soft": True}).loss_settings() \
        == {"soft": True}
    config = TrainingConfig(loss="multi_similarity", loss_params='{"alpha": 3, "beta": 40}')
    assert config.validate().loss_settings() == {"alpha": 3, "beta": 40}
    assert TrainingConfig(loss="multi_similarity").resolve(5).margin == 0.0  # no margin


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"loss": "circle", "loss_params": {"alpha": 1}}, ValueError,
     r"loss 'circle' takes the settings \['gamma'\], got unknown 'alpha'"),
    ({"loss": "circle", "loss_params": '{"gamma": "x"}'}, TypeError,
     "gamma of loss 'circle' must be a number, got 'x'"),
    ({"loss": "circle", "loss_params": "{gamma: 2}"}, ValueError,
     "loss_params must be a JSON object, got '{gamma: 2}': Expecting property name"),
    ({"loss": "circle", "loss_params": "[1]"}, ValueError,
     r"loss_params must be a JSON object, got '\[1\]'"),
    ({"loss_params": 3}, TypeError, "loss_params must be a dict or a JSON object string or "
     "None, got 3"),
    ({"loss": "arcface", "memory_size": 64}, ValueError,
     "memory_size applies to in-batch pair losses, got loss='arcface' with memory_size=64"),
    ({"loss": "triplet", "memory_size": 64}, ValueError,
     "memory_size applies to in-batch pair losses, got loss='triplet' with memory_size=64"),
    ({"memory_size": -1}, ValueError, "memory_size must be an int >= 0, got -1"),
])  # fmt: skip
def test_loss_params_and_memory_are_validated(changes, error, message):
    with pytest.raises(error, match=message):
        TrainingConfig(**changes).validate()


def test_cli_takes_loss_params_as_json_and_the_memory_size():
    from pipelines.cli.main import _parser

    args = _parser().parse_args(["train", "data", "--loss", "multi_similarity", "--loss-params",
                                 '{"alpha": 2, "epsilon": 0.2}', "--memory-size", "512",
                                 "--out", "e.keras"])  # fmt: skip
    config = TrainingConfig(loss=args.loss, loss_params=args.loss_params,
                            memory_size=args.memory_size)
    assert config.validate().loss_settings() == {"alpha": 2, "epsilon": 0.2}
    assert config.memory_size == 512
