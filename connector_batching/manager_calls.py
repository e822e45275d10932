"""The calls the engine makes on a work manager, adapted to its signature once.

Two families of managers exist in the field: those written to the seed's
interface (``initiate_work(work_name, entity_type)``, ``send_bundle(work_id,
objects)``, ``work_to_process(work_id, in_error=False, message=None)``) and
those written to the reference implementation's real signatures
(``initiate_work(name, work_counter=None)``, ``send_bundle(work_id, bundle)``,
``work_to_process(work_id, error_flag=False, error_message=None)``,
``update_state(state_key, date_str="", error_flag=False)``).  The parameter
names are read once, at construction; a method that takes neither set is
refused with a ``TypeError`` naming it and the names expected.  Nothing is
guessed at call time.
"""

from __future__ import annotations

import inspect
from typing import Any

from connector_batching.work_manager import check_work_manager

#: Per method: the accepted spellings of its main parameter, seed's first.
_WORK_NAME = ("work_name", "name")
_OBJECTS = ("objects", "bundle")
_ERROR_PAIRS = (("in_error", "message"), ("error_flag", "error_message"))


def _parameters(method: Any) -> tuple[set[str], bool] | None:
    """(keyword-capable parameter names, takes ``**kwargs``), or None when unknown."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return None
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _pick(manager: Any, method: str, choices: tuple[str, ...]) -> str:
    found = _parameters(getattr(manager, method))
    if found is None:
        return choices[0]
    names, var_keyword = found
    for choice in choices:
        if choice in names:
            return choice
    if var_keyword:
        return choices[0]
    raise TypeError(
        f"work_manager {type(manager).__name__}.{method}({', '.join(sorted(names))}) takes "
        f"none of the parameter names expected: {' or '.join(choices)} "
        "(see connector_batching.WorkManager)"
    )


def _error_pair(manager: Any) -> tuple[str, str] | None:
    found = _parameters(manager.work_to_process)
    if found is None:
        return None
    names, var_keyword = found
    for flag, message in _ERROR_PAIRS:
        if flag in names and message in names:
            return flag, message
    return _ERROR_PAIRS[0] if var_keyword else None


class ManagerCalls:
    """A work manager's four (or six) calls, bound to its own parameter names."""

    __slots__ = (
        "_close",
        "_entity",
        "_error",
        "_initiate",
        "_name",
        "_objects",
        "_read",
        "_read_takes_key",
        "_send",
        "_state",
    )

    def __init__(self, manager: Any) -> None:
        check_work_manager(manager)
        self._name = _pick(manager, "initiate_work", _WORK_NAME)
        found = _parameters(manager.initiate_work)
        self._entity = found is None or "entity_type" in found[0] or found[1]
        self._objects = _pick(manager, "send_bundle", _OBJECTS)
        _pick(manager, "work_to_process", ("work_id",))
        _pick(manager, "update_state", ("state_key",))
        _pick(manager, "update_state", ("date_str",))
        self._error = _error_pair(manager)
        self._initiate: Any = manager.initiate_work
        self._send: Any = manager.send_bundle
        self._close: Any = manager.work_to_process
        self._state: Any = manager.update_state
        self._read: Any = getattr(manager, "get_state", None)
        found = _parameters(self._read) if callable(self._read) else None
        self._read_takes_key = found is None or bool(found[0]) or found[1]

    @property
    def error_closing(self) -> bool:
        """True when the manager can close a work *in error* with a reason."""
        return self._error is not None

    def open(self, work_name: str, entity_type: str) -> str:
        """A new work's id."""
        if self._entity:
            return str(self._initiate(**{self._name: work_name, "entity_type": entity_type}))
        return str(self._initiate(**{self._name: work_name}))

    def send(self, work_id: str, objects: list[Any]) -> None:
        """Send one batch's objects in ``work_id``."""
        self._send(**{"work_id": work_id, self._objects: objects})

    def close(self, work_id: str) -> None:
        """Mark ``work_id`` processed."""
        self._close(work_id=work_id)

    def close_in_error(self, work_id: str, message: str) -> None:
        """Mark ``work_id`` processed in error with ``message`` (plainly closed
        when the manager cannot say "in error")."""
        if self._error is None:
            self._close(work_id=work_id)
        else:
            flag, text = self._error
            self._close(**{"work_id": work_id, flag: True, text: message})

    def write_state(self, state_key: str, date_str: str) -> None:
        """Save the cursor."""
        self._state(state_key=state_key, date_str=date_str)

    @property
    def can_read_state(self) -> bool:
        """True when the manager can read a stored cursor back (``get_state``)."""
        return callable(self._read)

    def read_state(self, state_key: str) -> Any:
        """The stored cursor: ``get_state(state_key)``, or the key of the state dict a
        reference-style ``get_state()`` returns; None without ``get_state``."""
        if not callable(self._read):
            return None
        if self._read_takes_key:
            return self._read(state_key)
        state = self._read()
        return state.get(state_key) if isinstance(state, dict) else None
