"""Every config value checked against a schema before any data is read.

The schemas are OmegaConf structured configs (dataclasses): merging a composed config into its
schema refuses a value of the wrong type, or a key the schema lacks, and OmegaConf names the key
and the type it expected. Where a node builds an object (`_target_`: the DataModule, the
LightningModule, the Trainer, every callback and logger, the optimizer, the scheduler) its schema
is made from the target's signature, so it cannot drift from the code; so are the objective's
(EGObjective) and the architecture options' (model.arch_kwargs: build_model and the
architecture's class). The top level, regime and paths, which configure no object, are written
out below. Range and choice checks stay with the code that uses the values.

Why the schemas check a copy after composition instead of being Hydra's compose-time schema (a
ConfigStore entry in train.yaml's defaults): Hydra would then write every constructor default
into the composed config (some fifty Trainer settings), so the run config that every checkpoint
stores, W&B shows and `ckpt_path=last` compares to find the same experiment would change for
every existing run. Checked as a copy, the config stays what the YAML files and overrides say.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import os
import pathlib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union, cast, get_args, get_origin

import hydra
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

PRIMITIVES = (bool, int, float, str)
# Hydra's instantiation keys: allowed in every node that names a `_target_`.
HYDRA_KEYS: dict[str, Any] = {
    "_target_": str,
    "_partial_": bool,
    "_convert_": str,
    "_recursive_": bool,
    "_args_": list[Any],
}


@dataclass
class Regime:
    """conf/regime/*.yaml: the training regime (cli/train.py: phases)."""

    name: str = MISSING
    pretrain_epochs: int = 0


@dataclass
class Paths:
    """conf/paths/default.yaml."""

    data_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    """drmm-train's top level (conf/train.yaml); the groups are checked by their own schemas."""

    task_name: str = MISSING
    tags: list[str] = field(default_factory=list)
    precision: str = "auto"
    seed: int | None = None
    train: bool = True
    test: bool = True
    test_ckpt: str = "best"
    ckpt_path: str | None = None
    optimized_metric: str | None = None
    print_config: bool = True
    data: Any = None
    model: Any = None
    objective: Any = None
    regime: Regime = field(default_factory=Regime)
    trainer: Any = None
    callbacks: dict[str, Any] | None = None
    logger: dict[str, Any] | None = None
    paths: Paths = field(default_factory=Paths)


@dataclass
class EvalConfig:
    """drmm-eval's top level (conf/eval.yaml)."""

    task_name: str = MISSING
    tags: list[str] = field(default_factory=list)
    seed: int | None = None
    precision: str = "auto"
    ckpt_path: str = MISSING
    data: dict[str, Any] | None = None
    evaluate_teacher: bool | None = None
    print_config: bool = False
    trainer: Any = None
    logger: dict[str, Any] | None = None
    paths: Paths = field(default_factory=Paths)


@dataclass
class ProbeConfig:
    """drmm-probe's top level (conf/probe.yaml)."""

    task_name: str = MISSING
    tags: list[str] = field(default_factory=list)
    ckpt_path: str = MISSING
    train_size: int = 5000
    test_size: int = 2000
    sources: list[str] = field(default_factory=list)
    components: int = 256
    class_C: list[float] = field(default_factory=list)
    ridge_alphas: list[float] = field(default_factory=list)
    batch_size: int = 500
    seed: int = 0
    out_dir: str | None = None
    data: dict[str, Any] | None = None
    print_config: bool = False
    logger: dict[str, Any] | None = None
    paths: Paths = field(default_factory=Paths)


def config_type(hint: Any) -> Any:
    """The type a config value for a parameter annotated `hint` is checked against: what of it a
    config can hold (numbers, strings, booleans, lists, dicts, dataclasses); Any where that is
    nothing checkable (a callable, or a class a nested `_target_` may build). Paths are strings,
    and a tensor in a union is dropped (a config never holds one: Adam's lr is a float)."""
    if hint is None or hint is type(None):
        return type(None)
    if hint in PRIMITIVES or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return hint
    if hint in (os.PathLike, pathlib.Path) or hint is pathlib.PurePath:
        return str
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return dataclass_schema(hint)
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return union({type(a) for a in args if type(a) in PRIMITIVES})
    if origin in (Union, types.UnionType):
        kept = [config_type(a) for a in args if a not in (type(None), torch.Tensor)]
        flat = {m for k in kept for m in (get_args(k) if get_origin(k) is Union else (k,))}
        if len(kept) == 1:
            checked = kept[0]
        else:  # OmegaConf checks unions of primitives only
            checked = union(flat) if flat <= set(PRIMITIVES) else Any
        return checked | None if type(None) in args and checked is not Any else checked
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        item = config_type(items[0]) if len(set(items)) == 1 else Any
        return list[item if item in PRIMITIVES else Any]  # type: ignore[misc]
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        value = config_type(args[1]) if len(args) == 2 else Any
        return dict[str, value if value in PRIMITIVES else Any]  # type: ignore[misc]
    return Any


def union(members: set) -> Any:
    """Union of primitive types (Any if none); bool before int so True stays a bool."""
    ordered = [t for t in PRIMITIVES if t in members] + [t for t in members if t not in PRIMITIVES]
    if not ordered:
        return Any
    return ordered[0] if len(ordered) == 1 else Union[tuple(ordered)]  # noqa: UP007


def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of `fn` (each on its own where the whole set does not
    resolve, Any for those that do not)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # a name only imported for type checking
        hints = {}
        namespace = getattr(fn, "__globals__", {})
        for name, text in getattr(fn, "__annotations__", {}).items():
            try:
                hints[name] = eval(text, namespace) if isinstance(text, str) else text
            except Exception:
                hints[name] = Any
        return hints


def make_schema(name: str, fields: dict[str, Any], open_: bool = False) -> type:
    """A dataclass with these typed fields, every one MISSING unless the config sets it (only
    the config's own values are checked; defaults stay the code's). `open_`: extra keys pass."""
    schema = dataclasses.make_dataclass(
        name, [(key, kind, field(default=MISSING)) for key, kind in fields.items()]
    )
    schema.__open__ = open_  # type: ignore[attr-defined]
    return schema


@functools.cache
def dataclass_schema(kind: type) -> type:
    """A dataclass's fields as a (mutable) schema."""
    hints = type_hints(kind)
    fields = {f.name: config_type(hints.get(f.name, Any)) for f in dataclasses.fields(kind)}
    return make_schema(kind.__name__, fields)


def parameters(target: Callable[..., Any], skip: Sequence[str] = ()) -> tuple[dict, bool]:
    """({name: config type} of the arguments `target` takes, whether it takes any keyword).
    A class whose __init__ passes **kwargs on takes its base classes' arguments too."""
    fields: dict[str, Any] = {}
    functions = (
        [vars(c)["__init__"] for c in target.__mro__ if "__init__" in vars(c) and c is not object]
        if isinstance(target, type)
        else [target]
    )
    for fn in functions:
        hints = type_hints(fn)
        forwards = False
        for name, param in inspect.signature(fn).parameters.items():
            if name == "self" or name in skip or param.kind is param.VAR_POSITIONAL:
                continue
            if param.kind is param.VAR_KEYWORD:
                forwards = True
                continue
            kind = config_type(hints.get(name, Any))
            if param.default is None and kind is not Any and get_args(kind)[-1:] != (type(None),):
                kind = kind | None  # default None: None is a valid value
            fields.setdefault(name, kind)
        if not forwards:
            return fields, False
    return fields, True


@functools.cache
def target_schema(target: str) -> type | None:
    """The schema of a `_target_` node, from the target's signature (None if it cannot be
    imported: instantiation will name it)."""
    try:
        obj = hydra.utils.get_object(target)
    except Exception:
        return None
    fields, open_ = parameters(obj)
    return make_schema(getattr(obj, "__name__", "target"), {**HYDRA_KEYS, **fields}, open_)


def objective_schema() -> type:
    """The objective group: EGObjective's arguments, and under `terms` every registered term's
    (training/terms/: objective.terms.<name> takes the options of that Term's signature, or
    null)."""
    from ..training.objective import EGObjective
    from ..training.terms import TERMS

    fields, _ = parameters(EGObjective, skip=("pixel_std", "terms"))
    terms = {
        name: Optional[make_schema(name, parameters(TERMS[name])[0])]  # noqa: UP045
        for name in sorted(TERMS)
    }
    return make_schema("objective", {**fields, "terms": make_schema("terms", terms)})


def arch_schema(arch: str) -> type | None:
    """model.arch_kwargs: the options of build_model and of the architecture's class."""
    from ..models.architectures import ARCHITECTURES, build_model

    if arch not in ARCHITECTURES:
        return None  # build_model names the valid architectures
    given = ("name", "in_channels", "num_classes", "image_size", "specs")
    fields, _ = parameters(build_model, skip=given)
    extra, _ = parameters(ARCHITECTURES[arch][0], skip=given)
    return make_schema(f"arch_kwargs of {arch}", {**extra, **fields})


def schema_keys(schema: type, path: str) -> list[str]:
    """The keys of the node at `path` (dotted, "" the top) of a schema, or [] if none."""
    kind: Any = schema
    for part in filter(None, path.split(".")):
        hints = {f.name: f.type for f in dataclasses.fields(kind)}
        kind = next((a for a in get_args(hints.get(part)) if a is not type(None)), hints.get(part))
        if not dataclasses.is_dataclass(kind):
            return []
    return [f.name for f in dataclasses.fields(kind)]


def check(values: Mapping[str, Any], schema: type | None, path: str = "") -> None:
    """A ValueError naming the first value of `values` (a plain mapping) of the wrong type for
    `schema`, or the first key it does not have."""
    if schema is None:
        return
    node = OmegaConf.structured(schema)
    if getattr(schema, "__open__", False):
        OmegaConf.set_struct(node, False)
    try:
        OmegaConf.merge(node, values)
    except ConfigKeyError as err:
        full = str(err.full_key or err.key)
        parent = full.rpartition(".")[0]  # the valid keys are those beside the unknown one
        valid = ", ".join(k for k in schema_keys(schema, parent) if not k.startswith("_"))
        raise ValueError(f"Unknown setting {path}{full}; valid keys here: {valid}.") from None
    except ValidationError as err:
        key = str(err.full_key or err.key)
        value = OmegaConf.select(OmegaConf.create(dict(values)), key, default=None)
        message = str(err.msg).splitlines()[0].rstrip(".")
        raise ValueError(f"{path}{key}={value!r}: {message}.") from None


def check_tree(values: Any, path: str = "") -> None:
    """Check every `_target_` node under `values` against its target's signature."""
    if not isinstance(values, Mapping):
        return
    if "_target_" in values:
        check(values, target_schema(values["_target_"]), path)
    for key, value in values.items():
        check_tree(value, f"{path}{key}.")


def check_config(cfg: DictConfig, top: type = TrainConfig) -> None:
    """Check the composed config (interpolations resolved) against `top`, the objective's,
    regime's, paths' and architecture's schemas, and every `_target_` node's."""
    values = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))
    values.pop("hydra", None)
    check(values, top)
    if isinstance(values.get("objective"), Mapping):
        check(values["objective"], objective_schema(), "objective.")
    model = values.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("arch_kwargs"), Mapping):
        check(model["arch_kwargs"], arch_schema(str(model.get("arch"))), "model.arch_kwargs.")
    check_tree(values)
