"""A training run's recipe: data, model, loss, training and test settings, read from YAML.

A recipe is a :class:`RunConfig` of five sections, each a dataclass whose fields are the
settings (their types, defaults and documentation live there once):

- ``data``: :class:`DataConfig` (datasets, image size, P x K batches, domain balancing);
- ``model``: :class:`ModelConfig` (architecture, head, DCSD factors, start);
- ``loss``: :class:`LossConfig`, the keyword options of :class:`dcsd.losses.DCSDLoss`;
- ``train``: :class:`dcsd.engine.TrainConfig`;
- ``test``: :class:`TestConfig`, the test-time options of :func:`dcsd.engine.evaluate_model`.

A YAML file holds any subset of the sections and keys; ``base: other.yaml`` (a path relative to
the file) starts from another recipe, as fast-reid's ``_BASE_``. Files are read with PyYAML's
safe loader and checked against the dataclasses: an unknown key, a value of the wrong type or
one the section refuses is a :class:`RecipeError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import torch
import yaml

from .engine import OPTIMIZERS, TrainConfig, evaluate_model
from .engine.trainer import AMP_MODES, NONFINITE_POLICIES
from .losses import DCSDLoss
from .models import create_model, list_models
from .models.resnet import HEADS
from .modules import FACTORS

BASE_KEY = "base"
RECIPE_FILE = "config.yaml"
# ResNet50 reduces an image 16-fold: below this the feature map is a pixel or less.
MIN_IMAGE_SIZE = (32, 16)
# Options that name one of a few values, by the constant that defines them.
TRAIN_CHOICES: dict[str, Callable[[], Sequence[str]]] = {
    "amp": lambda: AMP_MODES,
    "nonfinite": lambda: NONFINITE_POLICIES,
    "optimizer": lambda: OPTIMIZERS,
}


class RecipeError(ValueError):
    """A recipe file or override that does not fit :class:`RunConfig`; names the file and key."""


@dataclass
class DataConfig:
    """What is trained and tested on, and how batches are drawn.

    Attributes:
        data_root: folder holding the datasets' folders; ``None``: dcsd's built-in synthetic
            domains.
        datasets: training datasets in domain order (which fixes the global camera numbering);
            empty: every synthetic domain, or with ``data_root`` the five benchmarks of
            ``dcsd.data.DATASET_NAMES``.
        test_datasets: datasets to evaluate on, e.g. unseen ones (empty: ``datasets``).
        combineall: train on each training dataset's train + query + gallery (torchreid's
            combineall); needs ``test_datasets`` other than the training ones.
        register: modules imported first; each calls ``dcsd.data.register_dataset`` so
            ``datasets`` can name its dataset.
        synthetic_scale: size of the synthetic domains (identities x this).
        image_size: (H, W) the images are resized to.
        batch: P identities x K images of each per batch (P, K >= 2: a batch-hard triplet needs
            a positive and a negative).
        balance_domains: draw the same number of identities from every domain per batch.
        workers: DataLoader worker processes.
        per_domain: train one model per dataset instead of one joint model.
    """

    data_root: str | None = None
    datasets: tuple[str, ...] = ()
    test_datasets: tuple[str, ...] = ()
    combineall: bool = False
    register: tuple[str, ...] = ()
    synthetic_scale: float = 1.0
    image_size: tuple[int, int] = field(default=(256, 128), metadata={"metavar": ("H", "W")})
    batch: tuple[int, int] = field(default=(16, 4), metadata={"metavar": ("P", "K")})
    balance_domains: bool = False
    workers: int = 2
    per_domain: bool = False

    def __post_init__(self) -> None:
        if min(self.batch) < 2:
            raise ValueError(
                f"batch P K must have P >= 2 identities of K >= 2 images each (a batch-hard "
                f"triplet needs a positive and a negative), got {self.batch[0]} {self.batch[1]}"
            )
        if self.image_size[0] < MIN_IMAGE_SIZE[0] or self.image_size[1] < MIN_IMAGE_SIZE[1]:
            raise ValueError(
                f"image_size H W must be at least {MIN_IMAGE_SIZE[0]} {MIN_IMAGE_SIZE[1]}, got "
                f"{self.image_size[0]} {self.image_size[1]}"
            )
        if self.synthetic_scale <= 0:
            raise ValueError(f"synthetic_scale must be > 0, got {self.synthetic_scale}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


@dataclass
class ModelConfig:
    """The network trained.

    Attributes:
        architecture: a registered model (``dcsd.list_models()``).
        head: the head after the backbone: BoT's BNNeck or AGW's (non-local blocks and GeM).
        factors: the DCSD filter factors (paper Table V ablations); DCSD models only.
        stop_gradient: the filter generators read the domain and camera information D and
            Cam detached, so the generators' gradient never trains the domain / camera MLPs
            (paper Table VI ablation); DCSD models only.
        detach_information_input: the domain / camera MLPs read their input detached, so
            nothing that trains them (the domain and camera classifiers' losses; without
            ``stop_gradient``, the filters' gradient) flows on into the backbone; DCSD models
            only.
        pretrained: the start: ``"imagenet"`` (torchvision's ResNet50 backbone), ``"none"``,
            weights of the zoo (``dcsd.list_pretrained()``) or a local model folder.
        init_ddf: start ResNet50-DCSD from DDF's ImageNet weights instead: DDF's
            ``ddf_mul_resnet50.pth.tar`` or a folder ``dcsd convert-ddf`` wrote (sets the
            filter norm to DDF's); needs ``pretrained: none``.
        init: fine-tune a trained dcsd model (a model folder, a training checkpoint or a Hub id)
            on this run's data: its backbone, filter generators and domain / camera MLPs are
            kept, the heads that do not fit the data are rebuilt fresh
            (:func:`dcsd.models.init_from`); needs ``pretrained: none`` and no ``init_ddf``.
            Pair it with ``train.freeze_epochs`` to warm the fresh heads up first.
        zero_init_residual: zero-initialise each residual branch's last BatchNorm (what makes
            training from scratch learn in minutes; pretrained weights replace it).
    """

    architecture: str = field(
        default="resnet50_dcsd", metadata={"flag": "model", "choices": list_models}
    )
    head: str = field(default=HEADS[0], metadata={"choices": lambda: HEADS})
    factors: tuple[str, ...] = field(default=FACTORS, metadata={"choices": lambda: FACTORS})
    stop_gradient: bool = True
    detach_information_input: bool = True
    pretrained: str = "none"
    init_ddf: str | None = None
    init: str | None = None
    zero_init_residual: bool = True

    def __post_init__(self) -> None:
        if self.init_ddf is not None and self.pretrained != "none":
            raise ValueError(
                f"init_ddf starts every backbone tensor from DDF: pretrained must be 'none', "
                f"got {self.pretrained!r}"
            )
        if self.init is not None and (self.pretrained != "none" or self.init_ddf is not None):
            raise ValueError(
                f"init starts every tensor but the heads from the trained model {self.init!r}: "
                f"pretrained must be 'none' and init_ddf unset, got pretrained "
                f"{self.pretrained!r}, init_ddf {self.init_ddf!r}"
            )

    def is_dynamic(self) -> bool:
        """Whether the architecture takes the DCSD layer options (``factors``, ...): asked of
        the model itself, built on the meta device (no memory, no weights; about 0.2 s)."""
        with torch.device("meta"):
            probe = create_model(self.architecture, num_classes=0)
        return bool(getattr(probe, "dynamic", False))


def _argument_docs(function: Callable[..., Any]) -> dict[str, str]:
    """``name: text`` of a Google-style docstring's ``Args:`` / ``Attributes:`` section, with
    ``a, b: text`` lines giving the text to each name."""
    docs: dict[str, str] = {}
    lines = inspect.getdoc(function) or ""
    name_line = re.compile(r"^    ([a-z_][a-z0-9_, ]*):\s*(.*)$")
    current: list[str] = []
    for line in lines.splitlines():
        match = name_line.match(line)
        if match:
            current = [n.strip() for n in match.group(1).split(",")]
            for name in current:
                docs[name] = match.group(2).strip()
        elif line.startswith("        ") and current:
            for name in current:
                docs[name] += " " + line.strip()
        else:
            current = []
    return docs


def _options_dataclass(
    name: str, function: Callable[..., Any], doc_source: Any, exclude: Sequence[str] = ()
) -> type:
    """A dataclass of ``function``'s keyword options with defaults: their names, annotated
    types and defaults are the function's own, so nothing is written twice."""
    hints = get_type_hints(function)
    documented = _argument_docs(doc_source)
    fields = []
    attributes = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.default is inspect.Parameter.empty or parameter.name in exclude:
            continue
        fields.append((parameter.name, hints[parameter.name], field(default=parameter.default)))
        attributes.append(f"    {parameter.name}: {documented.get(parameter.name, '')}")
    doc = f"Options of {doc_source.__qualname__}.\n\nAttributes:\n" + "\n".join(attributes)
    made = dataclasses.make_dataclass(name, fields, namespace={"__doc__": doc})
    made.__module__ = __name__
    return made


LossConfig = _options_dataclass("LossConfig", DCSDLoss.__init__, DCSDLoss)
TestConfig = _options_dataclass(
    "TestConfig", evaluate_model, evaluate_model, exclude=("device", "amp")
)


@dataclass
class RunConfig:
    """A training run's recipe: one dataclass per section."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)  # type: ignore[valid-type]
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)  # type: ignore[valid-type]


SECTIONS: dict[str, type] = get_type_hints(RunConfig)


def field_choices(section: str, name: str) -> Sequence[str] | None:
    """The values ``section.name`` may take, when it names one of a few (else ``None``)."""
    if section == "train":
        choices = TRAIN_CHOICES.get(name)
        return tuple(choices()) if choices else None
    cls = SECTIONS[section]
    for item in dataclasses.fields(cls):
        if item.name == name:
            choices = item.metadata.get("choices")
            if choices is not None:
                return tuple(choices())
            literal = _literal_values(get_type_hints(cls)[name])
            return literal
    return None


def field_docs(section: str) -> dict[str, str]:
    """Each field's documentation (its ``Attributes:`` entry) of ``section``'s dataclass, as
    plain text (reST roles and literals unwrapped)."""
    docs = _argument_docs(SECTIONS[section])
    return {
        name: re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
        for name, text in docs.items()
    }


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    return get_args(hint) if get_origin(hint) is Literal else None


def _type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    if origin is Literal:
        return f"one of {list(args)}"
    return {bool: "true/false", int: "an int", float: "a number", str: "a string"}.get(
        hint, "null" if hint is type(None) else str(hint)
    )


def convert_value(value: Any, hint: Any) -> Any:
    """``value`` (as YAML reads it) as type ``hint``; ``TypeError`` when it is not one.

    Lists become tuples; an int is taken for a float; a bool is never taken for a number.
    """
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert_value(value, arg)
            except TypeError:
                continue
    elif origin is Literal:
        if value in args:
            return value
    elif origin is tuple and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert_value(item, args[0]) for item in value)
        if len(value) == len(args):
            return tuple(convert_value(item, arg) for item, arg in zip(value, args, strict=True))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise TypeError(f"must be {_type_name(hint)}, got {value!r}")


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The settings of a recipe file as nested dicts, its ``base`` chain merged under it.

    Raises:
        RecipeError: the file is not YAML, not a mapping of sections, or its ``base`` is
            missing or circular (the message names the file).
    """
    path = Path(path)
    chain: list[Path] = []
    settings: dict[str, Any] = {}
    referrer = ""
    while True:
        if path.resolve() in chain:
            raise RecipeError(f"{path}: its base chain loops back to itself")
        chain.append(path.resolve())
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise RecipeError(f"{path}{referrer}: no such recipe file") from None
        except yaml.YAMLError as error:
            raise RecipeError(f"{path}: not valid YAML: {error}") from None
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of sections, got {loaded!r}")
        loaded = dict(loaded)
        base = loaded.pop(BASE_KEY, None)
        check_settings(loaded, str(path))
        settings = _merge(loaded, settings)
        if base is None:
            return settings
        if not isinstance(base, str):
            raise RecipeError(f"{path}: {BASE_KEY} must be a file path, got {base!r}")
        referrer = f" (the {BASE_KEY} of {path})"
        path = path.parent / base


def check_settings(settings: Mapping[str, Any], source: str) -> None:
    """Refuse unknown sections and keys and values of the wrong type, naming ``source``."""
    for section, values in settings.items():
        if section not in SECTIONS:
            raise RecipeError(
                f"{source}: unknown section {section!r} (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(values, Mapping):
            raise RecipeError(f"{source}: {section} must be a mapping of keys, got {values!r}")
        cls = SECTIONS[section]
        hints = get_type_hints(cls)
        for key, value in values.items():
            if key not in hints:
                raise RecipeError(
                    f"{source}: unknown key {section}.{key} (known: {', '.join(hints)})"
                )
            try:
                converted = convert_value(value, hints[key])
            except TypeError as error:
                raise RecipeError(f"{source}: {section}.{key} {error}") from None
            choices = field_choices(section, key)
            items = converted if isinstance(converted, tuple) else (converted,)
            if choices is not None and converted is not None:
                bad = [item for item in items if item not in choices]
                if bad:
                    raise RecipeError(
                        f"{source}: {section}.{key} must be among {list(choices)}, got {value!r}"
                    )


def parse_override(text: str) -> dict[str, Any]:
    """``"section.key=value"`` (the value read as YAML) as ``{section: {key: value}}``.

    Raises:
        RecipeError: the text is not ``section.key=value``.
    """
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not (sep and dot and section and name):
        raise RecipeError(f"--set {text!r}: expected section.key=value, e.g. train.lr=3.5e-4")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise RecipeError(f"--set {text!r}: the value is not YAML: {error}") from None
    return {section: {name: value}}


def build_recipe(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> RunConfig:
    """A :class:`RunConfig` from settings layered in order (later ones win), each with the
    source named in errors (a file, ``--set``, the command line).

    Raises:
        RecipeError: a layer holds an unknown key or a value of the wrong type, or a section
            refuses the result (e.g. a batch of P < 2); the message names the source and key.
    """
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, str], str] = {}
    for source, settings in layers:
        check_settings(settings, source)
        merged = _merge(merged, settings)
        for section, values in settings.items():
            for key in values:
                origin[(section, key)] = source
    sections = {}
    for section, cls in SECTIONS.items():
        values = merged.get(section, {})
        hints = get_type_hints(cls)
        converted = {key: convert_value(value, hints[key]) for key, value in values.items()}
        try:
            sections[section] = cls(**converted)
        except (ValueError, TypeError) as error:
            # The key the section refused is the one its message names (else any key set).
            message = str(error)
            named = [key for key in values if message.startswith(f"{key} ")]
            named = named or [key for key in values if re.search(rf"\b{key}\b", message)]
            named = named or list(values)
            sources = sorted({origin[(section, key)] for key in named}) or ["the defaults"]
            keys = ", ".join(f"{section}.{key}" for key in named) or section
            raise RecipeError(f"{', '.join(sources)}: {keys}: {error}") from None
    return RunConfig(**sections)


def load_recipe(name_or_path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The :class:`RunConfig` of a recipe file or bundled recipe, with ``"section.key=value"``
    overrides applied (as ``dcsd train --config NAME --set ...``).

    Raises:
        RecipeError: naming the file (or ``--set``) and the key at fault.
    """
    path = find_recipe(name_or_path)
    merged: dict[str, Any] = {}
    for text in overrides:
        merged = _merge(merged, parse_override(text))
    return build_recipe([(str(path), read_recipe_file(path)), ("--set", merged)])


def recipe_dict(config: RunConfig) -> dict[str, Any]:
    """``config`` as plain YAML-ready values (tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return {name: plain(dataclasses.asdict(getattr(config, name))) for name in SECTIONS}


class _RecipeDumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (``image_size: [256, 128]``)."""


_RecipeDumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, data, flow_style=True
    ),
)


def save_recipe(config: RunConfig, path: str | Path) -> Path:
    """Write the fully resolved recipe as YAML (every section and key); returns the path."""
    path = Path(path)
    text = yaml.dump(recipe_dict(config), Dumper=_RecipeDumper, sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def bundled_recipes() -> list[str]:
    """Names of the recipes shipped with dcsd (``configs/*.yaml``, installed as
    ``dcsd.configs``), as ``--config`` accepts them."""
    folder = resources.files("dcsd.configs")
    return sorted(item.name[:-5] for item in folder.iterdir() if item.name.endswith(".yaml"))


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of a bundled recipe (``bot_dcsd_joint``).

    Raises:
        RecipeError: neither exists (the message lists the bundled names).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = resources.files("dcsd.configs") / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and bundled.is_file():
        return Path(str(bundled))
    raise RecipeError(
        f"{name_or_path}: no such recipe file, nor a bundled recipe "
        f"({', '.join(bundled_recipes())})"
    )
