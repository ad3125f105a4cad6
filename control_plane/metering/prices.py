"""The price sheet, the cold-start billing policy, and a bill made from usage sums (pure, exact).

Amounts are `Decimal`s: each line is its quantity times its unit price, rounded once to
`AMOUNT_PLACES` decimal places; the total is the sum of the lines. Quantities are exact sums of the
usage records (GB·s = MiB·ms / 1,024,000 always ends; keep-alive hours are idle ms / 3,600,000
rounded to `HOUR_PLACES`), so a bill reconciles with the records to the last digit.

Who pays for a container's start-up (`cold_start`):
- "invocation" (the default, Lambda's on-demand rule): the call that waited for an instance to
  start is billed its init time, at the function's memory size;
- "platform": start-ups are the platform's cost, never billed;
- "burst" (seed-style): only the start-ups of short-lived instances (those that lived less than
  `burst_lifetime_s`, the ones a burst of calls made) are billed, to the tenant whose calls caused
  them; a start-up that then serves for long is absorbed.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

AMOUNT_PLACES = Decimal("0.000001")
MIB_MS_PER_GB_S = Decimal(1024 * 1000)
MS_PER_HOUR = Decimal(3_600_000)
HOUR_PLACES = Decimal("0.000000001")  # keep-alive hours (3.6 µs): ms / 3,600,000 seldom ends
ColdStartPolicy = Literal["invocation", "platform", "burst"]
# In JSON a decimal is a string in plain notation ("0.0000002", never "2E-7"): what a spreadsheet,
# a person and a `numeric` column all read the same.
PlainDecimal = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str,
                                                  when_used="json")]


class PriceSheet(BaseModel):
    """Unit prices, from the config file's `[billing]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", max_length=8)
    per_gb_second: Decimal = Field(default=Decimal("0.0000166667"), ge=0)
    per_million_requests: Decimal = Field(default=Decimal("0.20"), ge=0)
    per_keepalive_instance_hour: Decimal = Field(default=Decimal("0"), ge=0)
    cold_start: ColdStartPolicy = "invocation"
    burst_lifetime_s: float = Field(default=60.0, gt=0)

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> PriceSheet:
        """From the config file's `[billing]` table (numbers as written, kept exact)."""
        return cls.model_validate({k: str(v) if isinstance(v, float) else v for k, v in table.items()})


class BillLine(BaseModel):
    """One line of a bill."""

    item: str
    quantity: PlainDecimal
    unit: str
    unit_price: PlainDecimal
    amount: PlainDecimal


class Bill(BaseModel):
    """A tenant's bill for one month."""

    tenant: str
    month: str
    currency: str
    cold_start_policy: ColdStartPolicy
    lines: list[BillLine]
    total: PlainDecimal


def _line(item: str, quantity: Decimal, unit: str, unit_price: Decimal) -> BillLine:
    amount = (quantity * unit_price).quantize(AMOUNT_PLACES, rounding=ROUND_HALF_EVEN)
    return BillLine(item=item, quantity=quantity, unit=unit, unit_price=unit_price, amount=amount)


def billed_init_mib_ms(totals: Mapping[str, int], policy: ColdStartPolicy) -> int:
    """The MiB·ms of start-ups the tenant pays under `policy`."""
    if policy == "invocation":
        return totals["init_mib_ms"]
    if policy == "burst":
        return totals["burst_init_mib_ms"]
    return 0


def make_bill(tenant: str, month: str, totals: Mapping[str, int], sheet: PriceSheet) -> Bill:
    """The bill of a month's usage sums (`Store.month_totals`) at `sheet`'s prices."""
    lines = [
        _line("requests", Decimal(totals["requests"]), "requests",
              sheet.per_million_requests / Decimal(1_000_000)),
        _line("compute", Decimal(totals["mib_ms"]) / MIB_MS_PER_GB_S, "GB-s", sheet.per_gb_second),
        _line(f"start-up ({sheet.cold_start})",
              Decimal(billed_init_mib_ms(totals, sheet.cold_start)) / MIB_MS_PER_GB_S, "GB-s",
              sheet.per_gb_second),
        _line("keep-alive", (Decimal(totals["idle_ms"]) / MS_PER_HOUR).quantize(HOUR_PLACES, ROUND_HALF_EVEN),
              "instance-hours", sheet.per_keepalive_instance_hour),
    ]
    return Bill(tenant=tenant, month=month, currency=sheet.currency, cold_start_policy=sheet.cold_start,
                lines=lines, total=sum((line.amount for line in lines), Decimal(0)))
