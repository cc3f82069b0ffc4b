"""mxc's runtime: programs, thread pool, engine, artifact loader (no compiler imports)."""


def load(path, **kwargs):
    """Load an artifact directory written by ``mxc compile`` / ``mx.compile``
    (see :mod:`mxc.runtime.artifact`)."""
    from .artifact import load as _load

    return _load(path, **kwargs)
