"""Observer conditions: parse once, compile to a fast function, evaluate per event.

``compile_condition("status == 'paid' && total > 100")`` returns a Condition; calling it with an
Event returns a bool and never raises. See compiler.py for how values compare.
"""

from __future__ import annotations

from pgobs.conditions.compiler import Condition, compile_condition
from pgobs.conditions.lexer import ConditionSyntaxError

__all__ = ["Condition", "ConditionSyntaxError", "compile_condition"]
