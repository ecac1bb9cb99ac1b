"""The one template renderer: Jinja2 that knows when a secret went into the text.

Variables (model/vars.py, `data_dir: "/srv/{{ lab }}"`), role templates
(`ctx.render()`) and `ops.files.template()` all render through `render()`:
the variables are read lazily through `Tracking`, which notes every Secret
read, and text rendered from one is returned as a Secret itself. So a file
whose content came from a password is masked in diffs and reports (and has
no digest there) however the template used it (`{{ pw | b64encode }}` too).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jinja2

from gpuprov.command import Secret

__all__ = ["Tracking", "contains_secret", "render"]


def contains_secret(value: Any) -> bool:
    """A Secret, or a list/dict holding one at any depth."""
    if isinstance(value, Secret):
        return True
    if isinstance(value, Mapping):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_secret(v) for v in value)
    return False


class Tracking(Mapping[str, Any]):
    """A template's variables, then its environment's globals, read one name at
    a time (a plain dict context would be copied, reading every variable);
    `used_secret` says whether a Secret was read."""

    def __init__(self, variables: Mapping[str, Any], env: jinja2.Environment) -> None:
        self.variables = variables
        self.env = env
        self.used_secret = False

    def __contains__(self, key: object) -> bool:
        return key in self.variables or key in self.env.globals

    def __getitem__(self, key: str) -> Any:
        if key in self.variables:
            value = self.variables[key]
            if contains_secret(value):
                self.used_secret = True
            return value
        return self.env.globals[key]

    def __iter__(self) -> Iterator[str]:
        return iter({**self.env.globals, **self.variables})

    def __len__(self) -> int:
        return len({**self.env.globals, **self.variables})


def render(template: jinja2.Template, variables: Mapping[str, Any],
           secret_values: Iterable[str] = ()) -> Any:
    """The template rendered with variables (the environment's concat decides
    the type); text that used a Secret, or contains one of secret_values, is a
    Secret. Jinja's own exceptions go to the caller, which names the template."""
    lookup = Tracking(variables, template.environment)
    context = template.new_context(lookup, shared=True)  # type: ignore[arg-type]
    value = template.environment.concat(template.root_render_func(context))
    derived = lookup.used_secret or any(s and s in str(value) for s in secret_values)
    if derived and isinstance(value, str) and not isinstance(value, Secret):
        return Secret(value)
    return value
