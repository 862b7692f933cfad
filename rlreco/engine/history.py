"""Transactions as integer-coded arrays: the one place where data frames become arrays.

Everything downstream (segmentation, state space, tables, simulation) works on
:class:`History` arrays, never on data frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rlreco.errors import DataError


@dataclass(frozen=True)
class History:
    """Transactions as parallel arrays.

    Rows without a customer id are kept (they define the product universe and the end of
    observation) but carry ``customer == -1`` and take no part in segmentation or state history.

    Attributes
    ----------
    customer : ndarray of int32, shape (n_rows,)
        Index into ``customer_ids``; -1 where the row has no customer id.
    product : ndarray of int32, shape (n_rows,)
        Index into ``product_codes``.
    day : ndarray of int32, shape (n_rows,)
        Order date as days since 1970-01-01.
    month : ndarray of int8, shape (n_rows,)
        Month of the order date, 1..12.
    half : ndarray of int8, shape (n_rows,)
        Month-half: 1 when the day of month is after the split day, else 0.
    weekday : ndarray of int8, shape (n_rows,)
        Weekday of the order date, 0 = Monday .. 6 = Sunday.
    quantity : ndarray of int64, shape (n_rows,)
        Quantity (negative for cancellations).
    gross : ndarray of float64, shape (n_rows,)
        Quantity x unit price.
    customer_ids : ndarray of str, shape (n_customers,)
        Customer ids, sorted.
    product_codes : ndarray of str, shape (n_products,)
        Product codes (StockCode as string), sorted.
    product_names : ndarray of str, shape (n_products,)
        First non-empty description of each product ("" if none).
    last_day : int
        End of observation: the last order date in the data, as days since 1970-01-01.
    hour : ndarray of int8, shape (n_rows,), or None
        Hour of the order time, 0..23 (None when the history was built without it).
    categorical : mapping of str to (ndarray of str, ndarray of int32)
        Categorical columns read for state fields (e.g. ``country``): per name, the distinct
        values sorted, and each row's index into them (-1 where the value is missing).
    """

    customer: np.ndarray
    product: np.ndarray
    day: np.ndarray
    month: np.ndarray
    half: np.ndarray
    weekday: np.ndarray
    quantity: np.ndarray
    gross: np.ndarray
    customer_ids: np.ndarray
    product_codes: np.ndarray
    product_names: np.ndarray
    last_day: int
    hour: np.ndarray | None = None
    categorical: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def rows(self, rows: np.ndarray) -> dict[str, object]:
        """The row-aligned arrays of the rows ``rows`` (for :func:`dataclasses.replace`)."""
        return {
            "customer": self.customer[rows],
            "product": self.product[rows],
            "day": self.day[rows],
            "month": self.month[rows],
            "half": self.half[rows],
            "weekday": self.weekday[rows],
            "quantity": self.quantity[rows],
            "gross": self.gross[rows],
            "hour": None if self.hour is None else self.hour[rows],
            "categorical": {
                name: (values, codes[rows]) for name, (values, codes) in self.categorical.items()
            },
        }

    @property
    def n_rows(self) -> int:
        """Number of transaction rows, with or without customer id."""
        return int(self.product.shape[0])

    @property
    def n_customers(self) -> int:
        """Number of distinct customer ids."""
        return int(self.customer_ids.shape[0])

    @property
    def n_products(self) -> int:
        """Number of distinct product codes."""
        return int(self.product_codes.shape[0])


def history_from_frame(
    frame: pd.DataFrame, *, source: str = "<frame>", categorical: tuple[str, ...] = ()
) -> History:
    """Encode a canonical transactions frame (see :mod:`rlreco.io.transactions`) as arrays.

    Parameters
    ----------
    frame : DataFrame
        Canonical columns ``product_id`` (str), ``product`` (str), ``quantity`` (int),
        ``order_date`` (datetime64), ``customer_id`` (str, missing as NA), and the derived
        ``day_number``, ``month``, ``month_half``, ``weekday``, ``hour`` and ``gross``.
    source : str
        Name of the data file, for error messages.
    categorical : tuple of str
        Columns of ``frame`` to encode as categorical state fields (missing values, allowed
        only on rows without a customer, are stored as "" by the loader).
    """
    if len(frame) == 0:
        raise DataError(f"{source}: no transactions")
    cust = frame["customer_id"]
    has_customer = cust.notna().to_numpy()
    if not has_customer.any():
        raise DataError(f"{source}: no row has a customer id; nothing to segment")
    cust_codes, customer_ids = pd.factorize(cust, sort=True, use_na_sentinel=True)
    prod_codes, product_codes = pd.factorize(frame["product_id"], sort=True)
    names = pd.Series(frame["product"].to_numpy(), dtype=object).where(
        frame["product"].notna().to_numpy(), None
    )
    first_name = (
        pd.DataFrame({"p": prod_codes, "n": names})
        .dropna()
        .drop_duplicates("p")
        .set_index("p")["n"]
    )
    product_names = np.full(len(product_codes), "", dtype=object)
    product_names[first_name.index.to_numpy()] = first_name.to_numpy()
    day = frame["day_number"].to_numpy(dtype=np.int32)
    return History(
        customer=cust_codes.astype(np.int32),
        product=prod_codes.astype(np.int32),
        day=day,
        month=frame["month"].to_numpy(dtype=np.int8),
        half=frame["month_half"].to_numpy(dtype=np.int8),
        weekday=frame["weekday"].to_numpy(dtype=np.int8),
        quantity=frame["quantity"].to_numpy(dtype=np.int64),
        gross=frame["gross"].to_numpy(dtype=np.float64),
        customer_ids=np.asarray(customer_ids, dtype=object).astype(str),
        product_codes=np.asarray(product_codes, dtype=object).astype(str),
        product_names=product_names.astype(str),
        last_day=int(day.max()),
        hour=frame["hour"].to_numpy(dtype=np.int8) if "hour" in frame else None,
        categorical={name: _categories(frame[name]) for name in categorical},
    )


def _categories(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each row's index into them."""
    codes, values = pd.factorize(column, sort=True)
    return np.asarray(values, dtype=object).astype(str), codes.astype(np.int32)
