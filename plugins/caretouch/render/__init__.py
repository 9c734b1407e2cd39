"""Rendering: templates (with the email layout), the sandbox and its budget, template checks,
and unsubscribe links (``render.unsubscribe``, imported by name: channels must not)."""

from .budget import MAX_INT_BITS, RenderBudget
from .templates import PARTS, RenderedMessage, TemplateStore
from .validate import DeclaredPayload

__all__ = [
    "MAX_INT_BITS",
    "PARTS",
    "DeclaredPayload",
    "RenderBudget",
    "RenderedMessage",
    "TemplateStore",
]
