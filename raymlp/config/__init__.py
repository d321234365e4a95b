"""All configuration models of raymlp (pydantic v2), and the loader that turns YAML into them.

Every YAML under ``configs/`` is parsed by these models, one module per audience:
:mod:`~raymlp.config.platform` (``platform.yaml``), :mod:`~raymlp.config.features`,
:mod:`~raymlp.config.training`, :mod:`~raymlp.config.serving`,
:mod:`~raymlp.config.monitoring` and :mod:`~raymlp.config.jobs`, on the shared foundation in
:mod:`~raymlp.config._base`. Models forbid unknown keys, describe every field, and their
validators quote the bad value and the rule. A wrong file fails at load time with one line naming
the file, the path to the field and the reason::

    >>> from raymlp.config import load_platform_config
    >>> cfg = load_platform_config("configs/platform.yaml")
    >>> cfg.storage.root
    '/abs/path/.raymlp'

    # a broken file:
    # raymlp.errors.ConfigError: configs/platform.yaml: storage.root: unsupported URI scheme
    #   'ftp' in 'ftp://x' (rule: a local path, file://, s3://, gs:// or az://)

Everything is importable from ``raymlp.config`` itself.
"""

from __future__ import annotations

from raymlp.config._base import *  # noqa: F403
from raymlp.config._base import M as M
from raymlp.config._base import __all__ as _base_all
from raymlp.config.features import *  # noqa: F403
from raymlp.config.features import __all__ as _features_all
from raymlp.config.jobs import *  # noqa: F403
from raymlp.config.jobs import __all__ as _jobs_all
from raymlp.config.monitoring import *  # noqa: F403
from raymlp.config.monitoring import __all__ as _monitoring_all
from raymlp.config.platform import *  # noqa: F403
from raymlp.config.platform import __all__ as _platform_all
from raymlp.config.serving import *  # noqa: F403
from raymlp.config.serving import __all__ as _serving_all
from raymlp.config.training import *  # noqa: F403
from raymlp.config.training import __all__ as _training_all
from raymlp.config.webhooks import *  # noqa: F403
from raymlp.config.webhooks import __all__ as _webhooks_all

__all__ = [
    *_base_all,
    *_webhooks_all,
    *_monitoring_all,
    *_platform_all,
    *_features_all,
    *_training_all,
    *_serving_all,
    *_jobs_all,
]

del _base_all, _webhooks_all, _monitoring_all, _platform_all, _features_all, _training_all
del _serving_all, _jobs_all
