"""The DAWNBench "custom ResNet" (ResNet-9), exactly as in the seed's table.

    PrepLayer   conv 3x3 64, BN, ReLU                                  -> 64 x 32 x 32
    Layer1      X = conv 3x3 128, MaxPool 2, BN, ReLU                   -> 128 x 16 x 16
                R1 = ResBlock(conv-BN-ReLU-conv-BN-ReLU)(X); X + R1
    Layer2      conv 3x3 256, MaxPool 2, BN, ReLU                       -> 256 x 8 x 8
    Layer3      X = conv 3x3 512, MaxPool 2, BN, ReLU                   -> 512 x 4 x 4
                R2 = ResBlock(X); X + R2
    MaxPool 4 -> FC 512 -> 10 -> softmax

6,573,130 parameters (convolutions without bias, BN with affine weights, FC with bias). The
channels above are `width` 64 (TrainConfig.width); another width scales them all, 1:2:4:8.

The network returns logits. Softmax is applied by `predict_proba` and, as log-softmax, inside the
cross-entropy loss: feeding softmax outputs into CrossEntropyLoss (as the seed solution did) applies
softmax twice, which squashes the outputs into a narrow band so the gradients all but vanish.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fastcifar.errors import ConfigError, first_line


def conv_bn_relu(channels_in: int, channels_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False)
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + ResBlock(x), where ResBlock is conv-BN-ReLU-conv-BN-ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv_bn_relu(channels, channels), conv_bn_relu(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResNet9(nn.Module):
    """Custom ResNet returning logits multiplied by `logit_scale`: by default Page's 0.125, the
    recipe's (TrainConfig.logit_scale), so that `fit(model=ResNet9())` trains the recipe."""

    def __init__(self, num_classes: int = 10, logit_scale: float = 0.125, width: int = 64) -> None:
        super().__init__()
        self.logit_scale = logit_scale
        w = width
        self.prep = conv_bn_relu(3, w)
        self.layer1 = nn.Sequential(conv_bn_relu(w, 2 * w, pool=True), Residual(2 * w))
        self.layer2 = conv_bn_relu(2 * w, 4 * w, pool=True)
        self.layer3 = nn.Sequential(conv_bn_relu(4 * w, 8 * w, pool=True), Residual(8 * w))
        self.pool = nn.MaxPool2d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(self.flatten(self.pool(x))) * self.logit_scale

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of the logits)."""
        return torch.softmax(self(x).float(), dim=1)


def load_weights(model: nn.Module, state: Any) -> str | None:
    """Load `state` into `model`; what does not fit, in one line (None when all fit): the first
    few missing, unexpected and mismatched keys, not torch's multi-line report."""
    try:
        model.load_state_dict(state)
        return None
    except (RuntimeError, TypeError, AttributeError, KeyError) as error:
        if not isinstance(state, Mapping):
            return first_line(error)
        return weights_mismatch(model.state_dict(), state) or first_line(error)


def weights_mismatch(own: Mapping[str, Any], given: Mapping[str, Any], shown: int = 3) -> str:
    """The keys of `given` that do not fit `own` (a model's state dict), the first few of each
    kind; '' when the keys and shapes all fit."""

    def first(kind: str, names: list[str]) -> str:
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return f"{kind} {', '.join(names[:shown])}{more}" if names else ""

    def shape(value: Any) -> tuple[int, ...] | None:
        return tuple(value.shape) if hasattr(value, "shape") else None

    mismatched = [f"{key} {shape(given[key])} for {shape(value)}" for key, value in own.items()
                  if key in given and shape(given[key]) != shape(value)]  # fmt: skip
    parts = [
        first("missing", [key for key in own if key not in given]),
        first("unexpected", [str(key) for key in given if key not in own]),
        first("shape", mismatched),
    ]
    return "; ".join(part for part in parts if part)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def step_gflop(model: nn.Module, batch: int, device: torch.device) -> float | None:
    """GFLOP of one training step of `batch` images: the forward, counted by torch's FLOP
    counter on one image, times 3 (forward, input gradients, weight gradients); None where the
    counter cannot run the model."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, 3, 32, 32, device=device))
    except Exception:  # a model of one's own may not run under the FLOP counter
        return None
    finally:
        model.train(was_training)
    return 3 * counter.get_total_flops() * batch / 1e9


def build_model(
    device: torch.device,
    logit_scale: float = 0.125,
    channels_last: bool = True,
    seed: int | None = None,
    *,
    factory: Callable[[], nn.Module] | None = None,
) -> nn.Module:
    """A freshly initialised model on `device` (the ResNet9 unless a `factory` of
    `model_factory` is given), in channels_last memory when asked.

    The weights are drawn on the CPU from `seed` (when given), so they are the same on every
    device and in every process."""
    if seed is not None:
        torch.manual_seed(seed)
    model = (factory or model_factory(None, 10, logit_scale))().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def reinitialise(model: nn.Module, seed: int, factory: Callable[[], nn.Module]) -> None:
    """Give `model` the initial weights of `build_model(seed=seed, factory=factory)`, copied in
    place: the tensors stay the same objects, so compiled graphs and CUDA graphs stay valid."""
    torch.manual_seed(seed)
    model.load_state_dict(factory().state_dict())


ModelChoice = nn.Module | Callable[..., nn.Module] | None


def model_factory(
    model: ModelChoice,
    num_classes: int,
    logit_scale: float,
    network: str = "resnet9",
    width: int = 64,
) -> Callable[[], nn.Module]:
    """A function that returns a freshly initialised model, its draws from torch's global seed:
    * None: the named `network` (TrainConfig.model: the ResNet9 of the recipe, or airbench's),
      `width` channels in its first block (ignored otherwise: Request.check refuses a width
      with a model of one's own before a run starts);
    * a class or function: called (with `num_classes` when it takes a parameter);
    * a module: a copy, each layer re-drawn by its own reset_parameters(), so that seed k
      starts from the same weights in every process."""
    if model is None:
        kind = network_class(network)
        return lambda: kind(num_classes, logit_scale, width)
    if isinstance(model, nn.Module):
        template = copy.deepcopy(model).cpu()
        return lambda: _reset(copy.deepcopy(template))
    build = _builder(model)
    return lambda: _checked(build(num_classes), model)


def check_model(model: ModelChoice) -> None:
    """A model of one's own that fit could not build, refused before a run starts."""
    if model is not None and not isinstance(model, nn.Module):
        _builder(model)


def check_width(model: ModelChoice, width: int) -> None:
    """A width other than 64 with a model of one's own: one line, since it would be recorded and
    not trained."""
    if model is not None and width != 64:
        raise ConfigError(
            f"width {width} sets the channels of the named networks; a model of one's own sets "
            "its own: leave width at 64"
        )


def network_class(name: str) -> type[nn.Module]:
    """The class of the network TrainConfig.model names."""
    from fastcifar.engine.airbench_net import AirbenchNet

    networks: dict[str, type[nn.Module]] = {"resnet9": ResNet9, "airbench": AirbenchNet}
    if name not in networks:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(networks)}")
    return networks[name]


def model_name(model: ModelChoice, network: str = "resnet9") -> str:
    """What config.json records of the model: the named network's class ("ResNet9",
    "AirbenchNet"), or the qualified name of a model of one's own (always with a dot)."""
    if model is None:
        return network_class(network).__name__
    kind = model if isinstance(model, type) or not isinstance(model, nn.Module) else type(model)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', repr(kind))}"


def architecture_of(model: nn.Module) -> str:
    """A digest of the names and shapes of the model's parameters and buffers: what tells two
    networks of one class apart when built with other arguments (their names cannot)."""
    shapes = "\n".join(  # a module's extra state need not be a tensor
        f"{name} {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
        for name, t in model.state_dict().items()
    )
    return hashlib.sha256(shapes.encode()).hexdigest()[:16]


def check_logits(model: nn.Module, num_classes: int, device: torch.device) -> None:
    """One line, before any training, when `model` has nothing to train or does not map
    N x 3 x 32 x 32 images to N x num_classes logits."""
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ConfigError("the model has no trainable parameters: there is nothing to train")
    was_training = model.training
    try:
        with torch.no_grad():
            output = model.eval()(torch.zeros(2, 3, 32, 32, device=device))
    except Exception as error:  # any failure of a model of one's own is the user's to fix
        raise ConfigError(
            "the model fails on a batch of 2 x 3 x 32 x 32 images "
            f"({type(error).__name__}: {first_line(error)})"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2, num_classes):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ConfigError(
            f"the model must map N x 3 x 32 x 32 images to N x {num_classes} logits (the data "
            f"has {num_classes} classes), got {shape} for N = 2"
        )


def _reset(model: nn.Module) -> nn.Module:
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return model


def _builder(model: Callable[..., object]) -> Callable[[int], object]:
    """How a class or function is called: with the class count as `num_classes=` where it names
    that parameter, else as its first positional one (or its `*args`), else with nothing. A
    constructor that needs more is refused before anything runs: it would get the class count
    in another parameter's place. nn.Module's own `(*args, **kwargs)`, which a subclass without
    an __init__ shows, takes nothing."""
    if not callable(model):
        raise ConfigError(
            "model must be an nn.Module, or a class or function returning one, "
            f"got {type(model).__name__}"
        )
    try:
        parameters = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):  # a builtin or C extension: no signature to read
        return lambda _: model()
    if isinstance(model, type) and model.__init__ is nn.Module.__init__:
        parameters = []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes = [p for p in parameters if p.kind in (*kinds, inspect.Parameter.VAR_POSITIONAL)]
    required = [p.name for p in parameters if p.default is p.empty and p.kind not in _VARIADIC]
    named = any(p.name == "num_classes" and p.kind != p.POSITIONAL_ONLY for p in parameters)
    given = ["num_classes"] if named else [p.name for p in takes[:1]]
    missing = [name for name in required if name not in given]
    if missing:
        name = getattr(model, "__qualname__", repr(model))
        raise ConfigError(
            f"model {name} needs {', '.join(missing)}, which fastcifar cannot give (it passes "
            f"the class count alone): pass a function that builds it, e.g. "
            f"model=lambda: {name}(...)"
        )
    if named:
        return lambda classes: model(num_classes=classes)
    return (lambda classes: model(classes)) if takes else (lambda _: model())


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _checked(model: object, source: Callable) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {source!r} returned {type(model).__name__}, not an nn.Module")
    return model
