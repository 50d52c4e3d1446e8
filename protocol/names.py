"""What people type for a question or a state, resolved to the data's own names.

This module owns the matching rules (docs/statistics.md, "Naming a question or a state"):
a name is taken as it is when the data has it; otherwise in any case, or by an alias (a
question's short id, a state's USPS code, an everyday name of the country or the capital).
A name that matches nothing gets the closest ones to offer in its error. The workers
resolve every job's names here, so the Python client, `lss`, the HTTP gateway and raw
protocol users all get the same rules; answers keep the canonical names as keys. Standard
library only: the broker and the clients may import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from protocol.locations import OTHER_NAMES, USPS_CODES
from protocol.questions import QUESTION_IDS

CLOSEST = 3
"""How many close matches an error offers at most."""
CUTOFF = 0.6
"""difflib's similarity ratio a name needs to be offered (0..1)."""


class Vocabulary:
    """The canonical names of one kind (questions, or states) and the aliases they answer to.

    With `offer_aliases`, an error's close matches are looked for among the aliases too and
    shown with them (a question's id is what one would type next time); without, only
    among the names (two-letter codes would offer "Hawaii" for "ohoi").
    """

    def __init__(
        self, names: Iterable[str], aliases: Mapping[str, str], offer_aliases: bool
    ) -> None:
        """`names` are canonical; an alias counts only when it points at one of them."""
        self._names = frozenset(names)
        known = {alias: name for alias, name in aliases.items() if name in self._names}
        self._alias_of = {name: alias for alias, name in known.items()} if offer_aliases else {}
        self._folded = {alias.casefold(): name for alias, name in known.items()}
        self._folded.update({name.casefold(): name for name in sorted(self._names)})
        offered = [*self._names, *self._alias_of.values()]
        self._offered = {key.casefold(): self._folded[key.casefold()] for key in offered}

    def resolve(self, given: str) -> str | None:
        """The canonical name `given` stands for, or None when it stands for none."""
        if given in self._names:
            return given
        return self._folded.get(given.strip().casefold())

    def closest(self, given: str, among: Iterable[str] | None = None) -> list[str]:
        """Up to `CLOSEST` canonical names like `given`, best first (`among` narrows them)."""
        allowed = self._names if among is None else frozenset(among)
        keys = [key for key, name in self._offered.items() if name in allowed]
        found = difflib.get_close_matches(given.strip().casefold(), keys, CLOSEST * 2, CUTOFF)
        return list(dict.fromkeys(self._offered[key] for key in found))[:CLOSEST]

    def hint(self, given: str, among: Iterable[str] | None = None) -> str:
        """The tail of an error message offering the closest names: "; closest: ..." or ""."""
        shown = [self._shown(name) for name in self.closest(given, among)]
        return f"; closest: {', '.join(shown)}" if shown else ""

    def _shown(self, name: str) -> str:
        alias = self._alias_of.get(name)
        return repr(name) if alias is None else f"{alias!r} ({name})"


def question_vocabulary(texts: Iterable[str]) -> Vocabulary:
    """The questions `texts`, each also named by its short id (`QUESTION_IDS`)."""
    return Vocabulary(texts, QUESTION_IDS, offer_aliases=True)


def state_vocabulary(names: Iterable[str]) -> Vocabulary:
    """The locations `names`, each also named by its USPS code (`USPS_CODES`); National
    and the District of Columbia also by their everyday names (`OTHER_NAMES`)."""
    return Vocabulary(names, {**USPS_CODES, **OTHER_NAMES}, offer_aliases=False)
