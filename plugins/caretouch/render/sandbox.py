"""Jinja's sandbox with every loop, call and growing operation on the render budget.

The template is rewritten as it compiles (``_Metering``) so that loops tick the meter and
every piece of text printed or joined is charged; the environment checks binary operators,
calls and filters before they run; the loader refuses a file bigger than the budget allows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.loaders import split_template_path
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .budget import (
    METER,
    Meter,
    Overrun,
    RenderBudget,
    budgeted_filter,
    check_binop,
    check_int_args,
    check_str_method,
)


class _Counted:
    """A loop's iterable: each iteration is a step of the render budget."""

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        meter = METER.get()
        for item in self.iterable:
            if meter is not None:
                meter.tick()
            yield item

    def __len__(self) -> int:
        return len(self.iterable)


@jinja2.pass_context  # never folded at compile time: it must run with the render
def _loop_steps(_ctx: Any, iterable: Any) -> Any:
    return _Counted(iterable)


@jinja2.pass_context
def _charged(_ctx: Any, value: Any) -> Any:
    meter = METER.get()
    return meter.charge(value) if meter is not None else value


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` printed is charged."""
    meter = METER.get()
    return meter.charge(value) if meter is not None else value


class _Metering(NodeTransformer):
    """Rewrites a template so that loops tick the budget and every piece of text it prints or
    joins is charged (static text inside a loop or macro too: it is printed over and over)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)  # in place: For and Output nodes stay themselves
        node.iter = nodes.Filter(node.iter, "_care_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_care_charge", [], [], None, None, lineno=node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [
            nodes.Filter(child, "_care_charge", [], [], None, None, lineno=child.lineno)
            if isinstance(child, nodes.TemplateData)
            else child
            for child in node.nodes
        ]
        return node


class _MeteringCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _Metering().visit(node)
        super().visit_Template(node, frame)


class BoundedLoader(jinja2.FileSystemLoader):
    """Refuses a template file bigger than the budget allows, before reading it."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        super().__init__(str(root))
        self.max_bytes = max_bytes

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        for searchpath in self.searchpath:
            path = os.path.join(searchpath, *split_template_path(template))
            if os.path.isfile(path) and os.path.getsize(path) > self.max_bytes:
                raise jinja2.TemplateError(
                    f"{template} is {os.path.getsize(path):,} bytes; a template may have at "
                    f"most {self.max_bytes:,}"
                )
        return super().get_source(environment, template)


class BudgetedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox, with every loop, call and growing operation on the render budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _MeteringCodeGenerator

    def __init__(self, budget: RenderBudget, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.budget = budget

    def install_filters(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        self.filters.update(filters)
        for name, func in list(self.filters.items()):
            self.filters[name] = budgeted_filter(name, func, self.budget)
        self.filters["_care_loop"] = _loop_steps
        self.filters["_care_charge"] = _charged

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right, self.budget)
        result = super().call_binop(context, operator, left, right)
        meter = METER.get()
        if meter is None:
            return result
        meter.tick()
        return meter.charge(result)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        check_int_args((*args, *kwargs.values()), self.budget, "a call")
        check_str_method(obj, args, self.budget)
        meter = METER.get()
        if meter is not None:
            meter.tick()
        result = super().call(context, obj, *args, **kwargs)
        return meter.charge(result) if meter is not None else result


def render_metered(
    template: jinja2.Template, context: Mapping[str, Any], budget: RenderBudget
) -> str:
    """One template rendered on a fresh budget; its output counted as it comes."""
    meter = Meter(budget)
    token = METER.set(meter)
    try:
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > budget.max_output:
                raise Overrun(f"more than {budget.max_output:,} characters of output")
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        METER.reset(token)
