"""On-demand transformations used by ``configs/features/churn.yaml``.

Each takes a dict of numpy arrays (source features named ``view__feature`` plus request fields)
and returns a dict with one array per output feature; see :mod:`raymlp.features.ondemand`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["charges_per_tenure"]


def charges_per_tenure(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Monthly charges per month of tenure, and the share of a requested discount in them.

    ``charges_per_tenure`` is null for a tenure of 0 or a missing input;
    ``discount_share`` is ``requested_discount / monthly_charges`` (null if charges are 0).

    Example::

        charges_per_tenure({"customer_profile__monthly_charges": np.array([70.0]),
                            "customer_profile__tenure_months": np.array([7]),
                            "requested_discount": np.array([7.0])})
        # {'charges_per_tenure': array([10.]), 'discount_share': array([0.1])}
    """
    charges = np.asarray(inputs["customer_profile__monthly_charges"], dtype=np.float64)
    tenure = np.asarray(inputs["customer_profile__tenure_months"], dtype=np.float64)
    discount = np.asarray(inputs["requested_discount"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_tenure = np.where(tenure > 0, charges / tenure, np.nan)
        share = np.where(charges != 0, discount / charges, np.nan)
    return {"charges_per_tenure": per_tenure, "discount_share": share}
