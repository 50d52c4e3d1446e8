"""The 55 locations of the data set (docs/dataset.md): USPS code and `LocationDesc` name.

Shared by the workers (a state may be given by its code: `protocol.names`) and the
stand-in generator (which writes these codes and names), so the two cannot drift apart.
The order is the stand-in's: the states and DC as the stand-in lists them, then Guam,
Puerto Rico, the Virgin Islands and National.
"""

from __future__ import annotations

# fmt: off
LOCATIONS: tuple[tuple[str, str], ...] = (
    ("AL", "Alabama"), ("AK", "Alaska"), ("AZ", "Arizona"), ("AR", "Arkansas"),
    ("CA", "California"), ("CO", "Colorado"), ("CT", "Connecticut"), ("DE", "Delaware"),
    ("DC", "District of Columbia"), ("FL", "Florida"), ("GA", "Georgia"), ("HI", "Hawaii"),
    ("ID", "Idaho"), ("IL", "Illinois"), ("IN", "Indiana"), ("IA", "Iowa"), ("KS", "Kansas"),
    ("KY", "Kentucky"), ("LA", "Louisiana"), ("ME", "Maine"), ("MD", "Maryland"),
    ("MA", "Massachusetts"), ("MI", "Michigan"), ("MN", "Minnesota"), ("MS", "Mississippi"),
    ("MO", "Missouri"), ("MT", "Montana"), ("NE", "Nebraska"), ("NV", "Nevada"),
    ("NH", "New Hampshire"), ("NJ", "New Jersey"), ("NM", "New Mexico"), ("NY", "New York"),
    ("NC", "North Carolina"), ("ND", "North Dakota"), ("OH", "Ohio"), ("OK", "Oklahoma"),
    ("OR", "Oregon"), ("PA", "Pennsylvania"), ("RI", "Rhode Island"), ("SC", "South Carolina"),
    ("SD", "South Dakota"), ("TN", "Tennessee"), ("TX", "Texas"), ("UT", "Utah"),
    ("VT", "Vermont"), ("VA", "Virginia"), ("WA", "Washington"), ("WV", "West Virginia"),
    ("WI", "Wisconsin"), ("WY", "Wyoming"), ("GU", "Guam"), ("PR", "Puerto Rico"),
    ("VI", "Virgin Islands"), ("US", "National"),
)
# fmt: on
"""(USPS code, LocationDesc) of every location; National's code is US, as in the data."""
USPS_CODES: dict[str, str] = dict(LOCATIONS)
"""USPS code -> LocationDesc."""

OTHER_NAMES: dict[str, str] = {
    **dict.fromkeys(
        ("United States", "United States of America", "USA", "U.S.", "U.S.A."), "National"
    ),
    **dict.fromkeys(
        ("Washington DC", "Washington, DC", "Washington D.C.", "Washington, D.C.", "D.C."),
        "District of Columbia",
    ),
}
"""Everyday names -> LocationDesc, for the two locations whose data name people do not
type: the country ("National") and the capital (which spelling matching would otherwise
take for the state of Washington)."""
