"""Networks: timm backbones by name with one logit, pretrained-weight sources, head reset."""

from deepauc.models.factory import create_model, load_pretrained, reset_head

__all__ = ["create_model", "load_pretrained", "reset_head"]
