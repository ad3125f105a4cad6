"""Usage metering, bills and budgets: records in from nodes (idempotent), usage tables and bills
out, a price sheet with the cold-start billing policy, and the budget loop."""

from control_plane.metering.prices import Bill, BillLine, ColdStartPolicy, PriceSheet, make_bill
from control_plane.metering.service import GROUPINGS, Metering, month_of, parse_month

__all__ = ["GROUPINGS", "Bill", "BillLine", "ColdStartPolicy", "Metering", "PriceSheet", "make_bill",
           "month_of", "parse_month"]
