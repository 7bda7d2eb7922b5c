"""One settings source: the estimator and the CLI are derived from or checked against
:class:`TrainingConfig`'s fields, and these tests fail when they drift apart."""

import dataclasses
import inspect

import pytest

from embedder import TripletEmbedder
from embedder.training import TrainingConfig
from pipelines.cli.main import _parser
from pipelines.cli.train import SET_BY_CLI

ESTIMATOR_ONLY = {"encoder", "input_shape", "embedding_dim", "weights", "callbacks"}


def _drift(estimator_cls, config_cls, parser):
    """Every difference between the config's fields and the estimator / CLI."""
    problems = []
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    signature = inspect.signature(estimator_cls.__init__).parameters
    params = {n: p for n, p in signature.items() if n != "self"}
    for name in sorted(set(fields) - set(params)):
        problems.append(f"{name}: a config field the estimator lacks")
    for name in sorted(set(params) - set(fields) - ESTIMATOR_ONLY):
        problems.append(f"{name}: an estimator parameter the config lacks")
    for name in sorted(set(fields) & set(params)):
        if params[name].default != fields[name].default:
            problems.append(f"{name}: default {params[name].default!r} in the estimator, "
                            f"{fields[name].default!r} in the config")
    constraints = config_cls.parameter_constraints()
    for name in fields:
        mine = estimator_cls._parameter_constraints.get(name)
        # constraint objects have no __eq__: compare what they say
        if mine is None or list(map(str, mine)) != list(map(str, constraints[name])):
            problems.append(f"{name}: constraint not derived from the config")
    doc = estimator_cls.__doc__
    problems += [f"{name}: no docstring entry" for name in params
                 if f"\n    {name} : " not in doc]
    return problems + _cli_drift(fields, parser)


def _cli_drift(fields, parser):
    problems = []
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    options = {a.dest: a for a in sub._actions}
    for name, field in fields.items():
        if name in SET_BY_CLI:
            continue
        if name not in options:
            problems.append(f"{name}: no CLI option")
        elif not options[name].help.startswith(field.metadata["help"]):
            problems.append(f"{name}: CLI help differs from the config's")
    return problems


def test_estimator_and_cli_match_the_config():
    assert _drift(TripletEmbedder, TrainingConfig, _parser()) == []


def test_drift_is_detected():
    @dataclasses.dataclass(frozen=True)
    class Wider(TrainingConfig):
        extra_setting: int = dataclasses.field(default=3, metadata={"help": "x"})

    problems = _drift(TripletEmbedder, Wider, _parser())
    assert "extra_setting: a config field the estimator lacks" in problems
    assert "extra_setting: no CLI option" in problems


def test_every_field_has_help_and_a_rule_or_choices():
    for field in dataclasses.fields(TrainingConfig):
        assert field.metadata["help"], field.name
        assert (field.metadata.get("check") is not None
                or field.metadata.get("choices") is not None), field.name


def test_validation_runs_once_per_fit(monkeypatch):
    from tests._helpers import tiny_embedder
    from tests._images import make_shapes

    calls = []
    original = TrainingConfig._check_fields

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(TrainingConfig, "_check_fields", counting)
    X, y = make_shapes(n_per_class=4, size=16, n_classes=2)
    tiny_embedder(epochs=1, validation_fraction=0.0, samples_per_class=2).fit(X, y)
    # scikit-learn's parameter validation checked the fields (derived constraints);
    # the config then checks only the rules between fields.
    assert calls == []
    with pytest.raises(ValueError, match="The 'epochs' parameter of TripletEmbedder"):
        tiny_embedder(epochs=0).fit(X, y)
