"""Checkpoints (MXNet's ``mx.model.save_checkpoint`` / ``load_checkpoint``).

``prefix-symbol.json`` holds the graph; ``prefix-%04d.params`` the parameters as an NDArray
dict with ``arg:<name>`` and ``aux:<name>`` keys.
"""
from __future__ import annotations

import logging

_log = logging.getLogger(__name__)

__all__ = ["load_checkpoint", "load_params", "save_checkpoint"]


def save_checkpoint(prefix: str, epoch: int, symbol, arg_params: dict, aux_params: dict,
                    remove_amp_cast: bool = True) -> None:
    """Write ``prefix-symbol.json`` (when ``symbol`` is given) and ``prefix-%04d.params``."""
    from . import ndarray as nd
    from .context import cpu

    if symbol is not None:
        symbol.save(f"{prefix}-symbol.json", remove_amp_cast=remove_amp_cast)
    save_dict = {f"arg:{k}": v.as_in_context(cpu()) for k, v in arg_params.items()}
    save_dict.update({f"aux:{k}": v.as_in_context(cpu()) for k, v in aux_params.items()})
    param_name = f"{prefix}-{epoch:04d}.params"
    nd.save(param_name, save_dict)
    _log.info('Saved checkpoint to "%s"', param_name)


def load_params(prefix: str, epoch: int) -> tuple:
    """(arg_params, aux_params) from ``prefix-%04d.params``."""
    from . import ndarray as nd

    fname = f"{prefix}-{epoch:04d}.params"
    save_dict = nd.load(fname)
    arg_params: dict = {}
    aux_params: dict = {}
    if not save_dict:
        _log.warning("Params file '%s' is empty", fname)
        return arg_params, aux_params
    if isinstance(save_dict, list):
        raise ValueError("the params file has no names; expected arg:/aux: keys")  # noqa: TRY004
    for k, v in save_dict.items():
        tp, name = k.split(":", 1) if ":" in k else ("", k)
        if tp == "arg":
            arg_params[name] = v
        if tp == "aux":
            aux_params[name] = v
    return arg_params, aux_params


def load_checkpoint(prefix: str, epoch: int) -> tuple:
    """(symbol, arg_params, aux_params) saved by :func:`save_checkpoint`."""
    from . import symbol as sym

    symbol = sym.load(f"{prefix}-symbol.json")
    arg_params, aux_params = load_params(prefix, epoch)
    return symbol, arg_params, aux_params
