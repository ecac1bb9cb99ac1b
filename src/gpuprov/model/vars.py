"""Variables of one host: precedence merge, -e parsing, lazy templating, secrets.

Precedence, low to high (later layers replace whole values; dicts are not
deep-merged, as in Ansible's default hash_behaviour=replace):

    role defaults < inventory all < group vars (parent before child)
    < host vars < play vars < role vars ({role: x, vars: ...}) < -e extra vars

Inventory layers (all, groups, host) arrive already merged in `host.vars`
(see inventory.py), so this module only stacks the rest around them.

String values containing `{{ }}` are rendered with Jinja2 only when read,
against the same host's variables, so `data_dir: "/srv/{{ lab_name }}"`
works whichever layer defines lab_name. A template that is exactly one
`{{ expr }}` keeps the native type (an int stays an int).
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jinja2
from jinja2.nativetypes import NativeEnvironment
from jinja2.utils import missing

from gpuprov import templating
from gpuprov.command import Secret
from gpuprov.errors import GpuprovError, InventoryError, UndefinedVariable
from gpuprov.model.secret_names import NON_SECRET_KEY_SUFFIXES, SECRET_SUFFIXES, is_secret_name
from gpuprov.model.yamlfile import Location, load_yaml, load_yaml_string, location

__all__ = [
    "NON_SECRET_KEY_SUFFIXES",
    "SECRET_SUFFIXES",
    "HostVars",
    "build_host_vars",
    "check_var_name",
    "is_secret_name",
    "is_valid_var_name",
    "magic_vars",
    "merge_layers",
    "parse_extra_vars",
]

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NO_LOCATION = Location(None, None)


def is_valid_var_name(name: Any) -> bool:
    """A name a Jinja2 template can refer to."""
    return isinstance(name, str) and _VAR_NAME.fullmatch(name) is not None


def check_var_name(name: Any, where: Location,
                   error: type[InventoryError] = InventoryError) -> None:
    """Refuse a name templates could not refer to, naming where it was set.

    Every place that reads variables (inventory, group/host_vars, plays, role
    defaults, -e) refuses with this one message; `error` picks the type a
    caller's users catch (PlaybookError for plays and roles).
    """
    if not is_valid_var_name(name):
        raise error(f"{name!r} is not a valid variable name", *where,
                    hint="use letters, digits and _ (not starting with a digit)")


class _HostLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def vars(self) -> Mapping[str, Any]: ...


def magic_vars(host: _HostLike) -> dict[str, Any]:
    """Ansible's read-only names templates commonly use (inventory_hostname, ...)."""
    groups = [g for g in getattr(host, "groups", ()) if g not in ("all", "ungrouped")]
    return {"inventory_hostname": host.name,
            "inventory_hostname_short": host.name.split(".")[0],
            "group_names": sorted(groups)}


def merge_layers(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Shallow merge, later layers win; None layers are skipped."""
    out: dict[str, Any] = {}
    for layer in layers:
        if layer:
            out.update(layer)
    return out


def build_host_vars(host: _HostLike, *, role_defaults: Mapping[str, Any] | None = None,
                    play_vars: Mapping[str, Any] | None = None,
                    role_vars: Mapping[str, Any] | None = None,
                    extra_vars: Mapping[str, Any] | None = None,
                    role: str | None = None,
                    play_defaults: Sequence[Mapping[str, Any]] = ()) -> HostVars:
    """The variables a role sees on `host`, in the documented precedence.

    play_defaults: the defaults of the play's other roles, below the role's
    own (as in Ansible, where `verify` sees gpu_image's `gpu_image`).
    """
    layers = [magic_vars(host), *play_defaults, role_defaults, host.vars, play_vars, role_vars,
              extra_vars]
    data = merge_layers(*layers)
    origins: dict[str, Location] = {}
    inventory_origins = getattr(host, "var_origins", {}) or {}
    for layer in layers:
        for key in layer or ():
            if layer is host.vars:
                origins[key] = inventory_origins.get(key, _NO_LOCATION)
            else:
                origins[key] = location(layer, key)
    return HostVars(data, host=host.name, role=role, origins=origins)


def parse_extra_vars(items: Sequence[str], base_dir: Path | None = None) -> dict[str, Any]:
    """Parse -e arguments: "k=v" (values stay strings, as in Ansible), several
    "k=v k2=v2" in one argument, "@file.yml", or an inline YAML/JSON mapping.
    Later arguments win."""
    out: dict[str, Any] = {}
    for item in items:
        text = item.strip()
        if text.startswith("@"):
            path = Path(text[1:]).expanduser()
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            data = load_yaml(path)
            _merge_extra(out, data, Location(str(path), getattr(data, "line", 1)))
        elif text.startswith("{"):
            data = load_yaml_string(text, f"-e {text!r}")
            _merge_extra(out, data, Location(f"-e {text!r}", None))
        else:
            try:
                tokens = shlex.split(text)
            except ValueError as e:
                raise InventoryError(f"-e {item!r}: {e}") from None
            if not tokens:
                raise InventoryError(f"-e {item!r}: empty extra vars argument")
            for token in tokens:
                key, sep, value = token.partition("=")
                if not sep:
                    raise InventoryError(
                        f"-e {item!r}: expected key=value, @file.yml or a YAML mapping",
                        hint="e.g. -e gpu_devices=all")
                check_var_name(key, Location(f"-e {item!r}", None))
                out[key] = value
    return out


def _merge_extra(out: dict[str, Any], data: Any, where: Location) -> None:
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise InventoryError(f"extra vars must be a mapping of names to values, got "
                             f"{type(data).__name__}", *where)
    for key, value in data.items():
        check_var_name(key, location(data, key) if where.file else where)
        out[key] = value


class _Undefined(jinja2.StrictUndefined):
    """StrictUndefined that tells HostVars which top-level name was missing."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        if self._undefined_obj is missing and self._undefined_name:
            raise _MissingName(self._undefined_name)
        return super()._fail_with_undefined_error(*args, **kwargs)


# StrictUndefined binds __str__, __iter__, ... to the base class's method at
# class creation, so overriding the method alone would not be seen.
for _attr in dir(jinja2.StrictUndefined):
    if getattr(jinja2.StrictUndefined, _attr) is jinja2.Undefined._fail_with_undefined_error:
        setattr(_Undefined, _attr, _Undefined._fail_with_undefined_error)


class _MissingName(jinja2.UndefinedError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is undefined")
        self.name = name


def _concat(values: Iterator[Any]) -> Any:
    # One expression keeps its type ("{{ port }}" -> int); anything else is
    # text. Unlike Jinja's NativeEnvironment there is no literal_eval, so a
    # string "0644" or "yes" is never re-typed.
    parts = list(values)
    if len(parts) == 1:
        value = parts[0]
        if isinstance(value, jinja2.Undefined):
            str(value)  # raises for a missing name
        return value
    return "".join(str(p) for p in parts)


class _Environment(NativeEnvironment):
    concat = staticmethod(_concat)  # type: ignore[assignment]


_ENV = _Environment(undefined=_Undefined, keep_trailing_newline=True)


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class HostVars(Mapping[str, Any]):
    """Read-only variables of one host; values are rendered when read.

    A missing name raises UndefinedVariable (not KeyError); use `in` or
    `.get()` to test for optional variables. Not shared between threads:
    each host's run builds its own.
    """

    def __init__(self, data: Mapping[str, Any], host: str = "localhost",
                 role: str | None = None, origins: Mapping[str, Location] | None = None) -> None:
        self._data = dict(data)
        self.host = host
        self.role = role
        self._origins = dict(origins or {})
        self._cache: dict[str, Any] = {}
        self._stack: list[str] = []  # names being rendered, to catch a -> b -> a

    def __getitem__(self, name: str) -> Any:
        if name in self._cache:
            return self._cache[name]
        if name not in self._data:
            raise UndefinedVariable(name, self.host, self.role)
        raw = self._data[name]
        if not _needs_render(raw):
            return self._mark(name, raw)
        if name in self._stack:
            cycle = " -> ".join([*self._stack[self._stack.index(name):], name])
            raise InventoryError(f"{self.host}: recursive variable reference: {cycle}",
                                 *self.origin(name),
                                 hint="one of these variables must hold a value, not a template")
        self._stack.append(name)
        try:
            value = self._render_value(raw, name)
        finally:
            self._stack.pop()
        value = self._mark(name, value)
        self._cache[name] = value
        return value

    def _mark(self, name: str, value: Any) -> Any:
        # a variable secret by its name is a Secret when read, so templates
        # and ops that use it know (a !secret value already is one)
        if isinstance(value, str) and not isinstance(value, Secret) and is_secret_name(name):
            return Secret(value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self._data else default

    def raw(self, name: str) -> Any:
        """The value as written, templates not rendered."""
        if name not in self._data:
            raise UndefinedVariable(name, self.host, self.role)
        return self._data[name]

    def origin(self, name: str) -> Location:
        """Where the variable's winning value was set (file, line), if known."""
        return self._origins.get(name, _NO_LOCATION)

    def is_secret(self, name: str) -> bool:
        """Secret by name (…_password, …_token, …), tagged !secret in YAML, or
        rendered from a secret (`db_url: "pg://u:{{ db_password }}@h"`)."""
        if is_secret_name(name) or isinstance(self._data.get(name), Secret):
            return True
        if name not in self._data or not _needs_render(self._data[name]):
            return False
        try:
            return templating.contains_secret(self[name])
        except GpuprovError:
            return False  # cannot be rendered, so nothing of it can be shown either

    def secret_values(self) -> list[str]:
        """Rendered values of the secret variables (and of strings inside them),
        for masking in output."""
        out: list[str] = []
        for name in self._data:
            if self.is_secret(name):
                try:
                    value = self[name]
                except GpuprovError:
                    continue  # an undefined secret cannot leak
                out.extend(_strings(value))
        return out

    def render(self, value: Any, what: str = "template") -> Any:
        """Render a template string (or strings inside lists/dicts) against these vars.

        A string that is one `{{ expr }}` keeps the expression's type; `what`
        names the template in errors (e.g. "templates/daemon.json.j2").
        """
        return self._render_value(value, what)

    def render_text(self, text: str, what: str = "template") -> str:
        """Render a template to text, e.g. a file's content (never a native type)."""
        if not _is_template(text):
            return text
        value = self._render_str(text, what)
        text = value if isinstance(value, str) else str(value)
        if not isinstance(text, Secret) and any(v in text for v in self.secret_values()):
            return Secret(text)  # a secret's value reached the text some other way
        return text

    def _render_value(self, value: Any, name: str) -> Any:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return self._render_str(value, name) if _is_template(value) else value
        if isinstance(value, Mapping):
            return {k: self._render_value(v, name) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render_value(v, name) for v in value]
        return value

    def _render_str(self, text: str, name: str) -> Any:
        where = self.origin(name)
        try:
            return templating.render(_compile(text), self)
        except _MissingName as e:
            err = UndefinedVariable(e.name, self.host, self.role)
            err.message += f" (needed by {name})"
            raise err from None
        except GpuprovError:
            raise
        except jinja2.TemplateSyntaxError as e:
            raise InventoryError(f"{self.host}: bad template in {name}: {e.message}",
                                 *where) from None
        except Exception as e:  # noqa: BLE001 - filters raise anything; name the variable
            shown = "" if is_secret_name(name) else f" = {text!r}"  # errors reach logs
            raise InventoryError(f"{self.host}: cannot render {name}{shown}: {e}",
                                 *where) from None


def _needs_render(value: Any) -> bool:
    if isinstance(value, Secret):
        return False  # taken literally: a `{{` in a password is part of it
    if isinstance(value, str):
        return _is_template(value)
    if isinstance(value, Mapping):
        return any(_needs_render(v) for v in value.values())
    if isinstance(value, list):
        return any(_needs_render(v) for v in value)
    return False


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [str.__str__(value)] if value else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []
